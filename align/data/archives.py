"""Recognising archives and extracting them safely.

A download is checked to start like an archive, so that a quota, login or captive portal page
served with HTTP 200 is not taken for one. Extraction refuses members with absolute paths or `..`
and goes through a hidden sibling folder, so an interrupted extraction never looks complete.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

from align.errors import UserError

log = logging.getLogger(__name__)

ARCHIVE_SIGNATURES = (
    (0, b"\x1f\x8b"),  # gzip (.tar.gz, .tgz)
    (0, b"PK\x03\x04"),  # zip
    (0, b"PK\x05\x06"),  # empty zip
    (0, b"BZh"),  # bzip2
    (0, b"\xfd7zXZ\x00"),  # xz
    (257, b"ustar"),  # uncompressed POSIX tar
)


def archive_problem(path: Path) -> str | None:
    """None if `path` starts like a tar, gzip, bzip2, xz or zip archive, else what it is."""
    with path.open("rb") as file:
        head = file.read(512)
    if any(head[at : at + len(magic)] == magic for at, magic in ARCHIVE_SIGNATURES):
        return None
    if b"<html" in head.lower() or head.lstrip().lower().startswith(b"<!doctype html"):
        return "got an HTML page (a quota, login or error page?), not an archive"
    return f"not a tar, gzip, bzip2, xz or zip archive (it starts with {head[:16]!r})"


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract a .tar(.gz/.tgz/.bz2/.xz) or .zip archive into the folder `dest`, replacing it.

    Members with absolute paths or `..` are refused. Extraction goes to a hidden sibling folder
    renamed onto `dest` at the end, so an interrupted extraction never looks complete.
    """
    if not archive.is_file():
        raise UserError(f"{archive}: no such archive file")
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("extracting %s into %s", archive, dest)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, staging)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, staging)
        else:
            raise UserError(f"{archive}: not a tar or zip archive")
    except tarfile.FilterError as error:
        shutil.rmtree(staging)
        raise UserError(f"{archive}: refusing to extract it ({error})") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        shutil.rmtree(staging)
        raise UserError(
            f"{archive}: corrupt or truncated archive ({error}); delete it and run again"
        ) from None
    except BaseException:
        shutil.rmtree(staging)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


def _refuse_unsafe(archive: Path, member_name: str) -> None:
    for path in (PurePosixPath(member_name), PureWindowsPath(member_name)):
        if path.is_absolute() or path.anchor or ".." in path.parts:
            raise UserError(
                f"{archive}: refusing to extract member {member_name!r} (absolute path or '..'); "
                "the archive is not a dataset release"
            )


def _extract_tar(archive: Path, staging: Path) -> None:
    # One pass over the members: seeking back in a gzip stream would decompress it twice.
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            _refuse_unsafe(archive, member.name)
            # The "data" filter also refuses links that point outside and device files.
            tar.extract(member, staging, filter="data")


def _extract_zip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as zip_file:
        for name in zip_file.namelist():
            _refuse_unsafe(archive, name)
        zip_file.extractall(staging)


@contextmanager
def scratch_folder(beside: Path) -> Iterator[Path]:
    """An empty folder next to `beside` (same filesystem, so hard links from it work).

    It is removed afterwards, and also at the start, in case a killed run left one behind.
    """
    scratch = beside.with_name(f"{beside.name}.scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
