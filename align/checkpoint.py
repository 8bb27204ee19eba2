"""Resume checkpoints of a training run: the newest one and the one before it.

A checkpoint holds everything a killed run needs to continue to the same final weights: models,
optimisers, the method's generator, torch's global RNG and the loop's progress, tagged with the
run's identity. Each is written atomically; the previous one is kept, so that a damaged newest
file (a truncated copy, a bad disk block) still leaves one to resume from, and a run with no
readable checkpoint starts afresh rather than failing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from align.atomic import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.previous.pt"
NAMES = (CHECKPOINT, PREVIOUS)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to `path` through a temporary file renamed when complete."""
    with atomic_path(path) as partial:
        torch.save(obj, partial)


class Checkpoints:
    """The resume checkpoints of one run folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def save(self, state: dict[str, Any]) -> None:
        current = self.folder / CHECKPOINT
        if current.is_file():
            os.replace(current, self.folder / PREVIOUS)
        atomic_torch_save(state, current)

    def load(self, identity: dict[str, Any], device: torch.device) -> dict[str, Any] | None:
        """The newest readable checkpoint of this `identity`, or None to start afresh."""
        for name in NAMES:
            path = self.folder / name
            if not path.is_file():
                continue
            try:
                state = torch.load(path, map_location=device, weights_only=False)
            except Exception as error:  # truncated or damaged: torch raises many kinds
                log.warning("%s is unreadable (%s); trying an earlier checkpoint", path,
                            f"{type(error).__name__}: {error}".splitlines()[0])
                continue
            if not isinstance(state, dict) or state.get("identity") != identity:
                log.warning("%s belongs to another configuration; not resuming from it", path)
                continue
            return state
        return None
