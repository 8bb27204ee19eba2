"""The lock file of pinned checksums, and checking a download against it.

The expected sha256 of a download comes from a param or from the lock file
`<data.root>/checksums.json` (committed for the default root `data`); a file with neither has the
sha256 of its first download recorded there, so every later download (on any machine) is checked
against it. A finished download is moved into place only once it is known to be an archive with
the expected sha256, so a download that exists is complete and verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from align.atomic import write_text_atomically
from align.data.archives import archive_problem
from align.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = "checksums.json"
"""The lock file in the data root: checksum key (`<dataset>:<file name>`, e.g. `vlcs:VLCS.tar.gz`)
-> sha256 of that file."""


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_checksums(lock_file: Path) -> dict[str, str]:
    if not lock_file.is_file():
        return {}
    try:
        checksums = json.loads(lock_file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{lock_file}: not valid JSON ({error}); restore it from git") from None
    if not isinstance(checksums, dict):
        raise UserError(f"{lock_file}: expected a JSON object key -> sha256; restore it from git")
    return checksums


def write_checksums(checksums: dict[str, str], lock_file: Path) -> None:
    write_text_atomically(lock_file, json.dumps(checksums, indent=2, sort_keys=True) + "\n")


def record_checksum(key: str, digest: str, lock_file: Path) -> None:
    """Add `key -> digest` to the lock file, keeping the other entries; written atomically."""
    write_checksums({**read_checksums(lock_file), key: digest}, lock_file)
    log.info("recorded the sha256 of %s in %s; commit it to pin the download", key, lock_file)


def locked_checksum(checksum_key: str | None, lock_file: Path) -> str | None:
    return read_checksums(lock_file).get(checksum_key) if checksum_key else None


def reuse_existing(
    dest: Path, expected: str | None, key: str | None, record: Callable[[str, str], None]
) -> bool:
    """Whether `dest` is already downloaded; a copy that fails its checks is deleted."""
    if not dest.is_file():
        return False
    if expected is None:
        problem = archive_problem(dest)
        if problem:
            log.warning("%s: %s; downloading it again", dest, problem)
            dest.unlink()
            return False
        if key is not None:
            record(key, sha256_of(dest))
        return True
    got = sha256_of(dest)
    if got == expected:
        log.info("%s already downloaded and verified", dest)
        return True
    log.warning("%s does not match sha256 %s; downloading it again", dest, expected)
    dest.unlink()
    return False


def verify_and_move(
    part: Path, dest: Path, expected: str | None, key: str | None, lock_file: Path, url: str,
    record: Callable[[str, str], None],
) -> Path:
    """Check that the finished `part` is an archive with the `expected` sha256 (or record its
    sha256, once it is known to be an archive), then move it onto `dest`."""
    problem = archive_problem(part)
    if problem:
        part.unlink()
        raise UserError(
            f"{url}: {problem}; it was deleted and no checksum recorded. Open the URL in a"
            " browser to see what the server sends, or download the archive by hand and set the"
            " dataset's `archive` param"
        )
    got = sha256_of(part)
    if expected is not None and got != expected:
        part.unlink()
        raise UserError(
            f"{dest}: checksum mismatch: expected sha256 {expected}, got {got}; the download "
            "was deleted. Run again; if it repeats, the file at the source is not the one whose "
            f"sha256 is in the dataset's sha256 param or in {lock_file} (remove that entry if it "
            "was recorded from a bad download)"
        )
    os.replace(part, dest)
    if expected is None and key is not None:
        record(key, got)
    log.info("downloaded %s (sha256 %s)", dest, got)
    return dest
