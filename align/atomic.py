"""Writing a file so that its path holds either the old content or the complete new one, never a
half-written file that looks finished (a killed stage leaves at most a hidden `.<name>.tmp`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside `path` to write to; renamed onto `path` when the block
    completes, deleted when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> Path:
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return path


def write_json_atomically(path: Path, document: Any, indent: int = 1) -> Path:
    return write_text_atomically(path, json.dumps(document, indent=indent) + "\n")
