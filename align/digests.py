"""Digests of files: what the identities, the result stores and the output seals compare."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path


@cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, computed once per (path, size, modification time)."""
    stat = path.stat()
    return _file_digest(path.resolve(), stat.st_size, stat.st_mtime_ns)


def content_digest(files: Iterable[Path]) -> str:
    """One sha256 over the names and bytes of `files` (in the given order)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()[:16]
