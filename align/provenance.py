"""What a result came from: the git commit of the code (or the DVC experiment) and the hash of the
parameters."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from align.config import Params, params_hash

PROJECT_ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT_BASELINE = "DVC_EXP_BASELINE_REV"
EXPERIMENT_NAME = "DVC_EXP_NAME"
"""What `dvc exp run` sets for every stage of an experiment (dvc/env.py): the commit it started
from and its name."""


def git_commit() -> str:
    """The checked-out commit, with `-dirty` when tracked files differ from it; `unknown` outside
    a git checkout (e.g. an installed wheel). Inside `dvc exp run`: `<baseline commit> (dvc
    experiment <name>)`, since the experiment's own commit is made only after its stages ran,
    and its name finds that commit afterwards (`dvc exp show`, `dvc exp apply <name>`)."""
    baseline, name = os.environ.get(EXPERIMENT_BASELINE), os.environ.get(EXPERIMENT_NAME)
    if baseline and name:
        return f"{baseline} (dvc experiment {name})"
    return _checkout_commit()


@cache
def _checkout_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


@cache
def commit_time() -> str:
    """When the checked-out commit was made (ISO 8601, UTC); `unknown` outside a git checkout.
    A result says when its code was written, not when it was computed: the same inputs must
    give the same bytes on any machine and at any time (DVC's cache, a SLURM node)."""
    try:
        stamp = subprocess.run(
            ["git", "show", "--no-patch", "--format=%ct", "HEAD"], cwd=PROJECT_ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return datetime.fromtimestamp(int(stamp), UTC).isoformat(timespec="seconds")


def provenance(params: Params, keys: list[str] | None = None) -> dict[str, Any]:
    """`{"git_commit", "params_hash"}` to stamp into a result file; the hash covers `keys` (every
    top-level section when None)."""
    keys = keys or sorted(Params.model_fields)
    return {"git_commit": git_commit(), "params_hash": params_hash(params, keys)}
