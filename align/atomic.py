"""Writing a file so that its path holds either the old content or the complete new one, never a
half-written file that looks finished (a killed stage leaves at most a hidden `.<name>.tmp`).

A full disk (or quota) is reported here once for every writer (JSON, shards, checkpoints,
figures) as one line naming the file, instead of an OSError or torch's "unexpected pos".
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from align.errors import UserError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "iostream error")
"""torch.save's C++ writer reports a failed write as a RuntimeError holding one of these (which
one depends on where the write failed), without an errno."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside `path` to write to; renamed onto `path` when the block
    completes, deleted when it fails. A full disk becomes a UserError naming `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    try:
        yield partial
        os.replace(partial, path)
    except OSError as error:
        if error.errno not in DISK_FULL_ERRNOS:
            raise
        raise UserError(
            f"{path}: could not be written, no space left on the device ({_free(path)} free);"
            " free space there and rerun"
        ) from None
    except RuntimeError as error:
        if not any(text in str(error) for text in TORCH_WRITE_FAILURES):
            raise
        raise UserError(
            f"{path}: could not be written (torch: {str(error).splitlines()[0]}); the disk is"
            f" full or failing ({_free(path)} free): free space there and rerun"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def _free(path: Path) -> str:
    return f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB"


def write_text_atomically(path: Path, text: str) -> Path:
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return path


def write_json_atomically(path: Path, document: Any, indent: int = 1) -> Path:
    return write_text_atomically(path, json.dumps(document, indent=indent) + "\n")
