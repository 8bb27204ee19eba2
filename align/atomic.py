"""Writing a file so that its path holds either the old content or the complete new one, never a
half-written file that looks finished (a killed stage leaves at most a hidden `.<name>.tmp`).

A full disk (or quota), and a file size limit (`ulimit -f`), are reported here once for every
writer (JSON, shards, checkpoints, figures) as one line naming the file, instead of an OSError or
torch's "unexpected pos".
"""

from __future__ import annotations

import errno
import json
import os
import resource
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
        if error.errno == errno.EFBIG:
            raise UserError(_size_limit_message(path)) from None
        if error.errno not in DISK_FULL_ERRNOS:
            raise
        raise UserError(
            f"{path}: could not be written, no space left on the device ({_free(path)} free);"
            " free space there and rerun"
        ) from None
    except RuntimeError as error:
        if not any(text in str(error) for text in TORCH_WRITE_FAILURES):
            raise
        if partial.exists() and partial.stat().st_size >= _file_size_limit():
            raise UserError(_size_limit_message(path)) from None
        raise UserError(
            f"{path}: could not be written (torch: {str(error).splitlines()[0]}); the disk is"
            f" full or failing ({_free(path)} free): free space there and rerun"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def _file_size_limit() -> float:
    """This process's largest writable file in bytes (`ulimit -f`), inf when unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return float("inf") if soft == resource.RLIM_INFINITY else soft


def _size_limit_message(path: Path) -> str:
    limit = _file_size_limit()
    shown = "unknown" if limit == float("inf") else f"{limit / 1024:.0f} KiB"
    return (f"{path}: could not be written, larger than this shell's file size limit ({shown});"
            " raise it (`ulimit -f unlimited`) and rerun")


def _free(path: Path) -> str:
    return f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB"


def write_text_atomically(path: Path, text: str) -> Path:
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return path


def write_json_atomically(path: Path, document: Any, indent: int = 1) -> Path:
    return write_text_atomically(path, json.dumps(document, indent=indent) + "\n")
