"""Verified downloads (HTTP with resume and retries, or Google Drive) and safe archive extraction.

A download streams into `<dest>.part`, is checked against a sha256 and only then moved into place,
so `dest` existing means it is complete and verified. The expected sha256 comes from a param or
from the committed lock file `data/checksums.json`; a file with neither has the sha256 of its first
download recorded there, so every later download (on any machine) is checked against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

import gdown
import requests
from tqdm import tqdm

from align.atomic import write_text_atomically
from align.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = Path("data/checksums.json")
"""Committed lock file: checksum key (e.g. `vlcs:VLCS.tar.gz`) -> sha256 of that file."""

GDRIVE_URL = "https://drive.google.com/uc?id={file_id}"
OFFLINE_HINT = "offline, set the dataset's `archive` (or `folder`) param to a local copy instead"
CHUNK_BYTES = 1 << 20
RETRYABLE_STATUS = frozenset({408, 429})
"""Besides every 5xx: statuses that say 'try again later', not 'this URL is wrong'."""


class _TransientError(Exception):
    """A failure worth retrying: a 5xx answer or a transfer cut short."""


_TRANSIENT = (
    _TransientError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def downloads_dir(raw_dir: Path) -> Path:
    """Where a source caches its downloads: `<data.root>/downloads/`.

    `raw_dir` is `<data.root>/raw/<dataset>` (or its staging sibling), and the cache must live
    outside it because the acquire stage replaces the raw folder as a whole.
    """
    return raw_dir.parent.parent / "downloads"


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_checksums(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    if not lock_file.is_file():
        return {}
    try:
        checksums = json.loads(lock_file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{lock_file}: not valid JSON ({error}); restore it from git") from None
    if not isinstance(checksums, dict):
        raise UserError(f"{lock_file}: expected a JSON object key -> sha256; restore it from git")
    return checksums


def record_checksum(key: str, digest: str, lock_file: Path = LOCK_FILE) -> None:
    """Add `key -> digest` to the lock file, keeping the other entries; written atomically."""
    checksums = {**read_checksums(lock_file), key: digest}
    write_text_atomically(lock_file, json.dumps(checksums, indent=2, sort_keys=True) + "\n")
    log.info("recorded the sha256 of %s in %s; commit it to pin the download", key, lock_file)


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    checksum_key: str | None = None,
    lock_file: Path = LOCK_FILE,
    retries: int = 4,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    offline_hint: str = OFFLINE_HINT,
) -> Path:
    """Download `url` to `dest` over HTTP(S), verified; a verified `dest` already there is reused.

    An interrupted transfer resumes from `<dest>.part` where the server accepts Range requests.
    Connection errors and 5xx answers are retried `retries` times, waiting `backoff_s * 2**attempt`.
    The checksum is `sha256` when given, else the lock file's entry for `checksum_key`, else the
    download's own sha256 is recorded there under `checksum_key`.
    """
    expected = sha256 or _locked_checksum(checksum_key, lock_file)
    if _reuse_existing(dest, expected, checksum_key, lock_file):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    log.info("downloading %s to %s", url, dest)
    for attempt in range(retries + 1):
        try:
            _stream(url, part, timeout_s)
            break
        except requests.HTTPError as error:
            raise UserError(f"could not download {url}: {error}; {offline_hint}") from None
        except _TRANSIENT as error:
            reason = " ".join(str(error).split())
            if attempt == retries:
                raise UserError(
                    f"could not download {url} after {retries + 1} attempts ({reason}); "
                    f"{offline_hint}"
                ) from None
            delay_s = backoff_s * 2**attempt
            log.warning("download of %s failed (%s); retrying in %.1f s", url, reason, delay_s)
            time.sleep(delay_s)
    return _verify_and_move(part, dest, expected, checksum_key, lock_file)


def download_gdrive(
    file_id: str,
    dest: Path,
    *,
    sha256: str | None = None,
    checksum_key: str | None = None,
    lock_file: Path = LOCK_FILE,
    retries: int = 4,
    offline_hint: str = OFFLINE_HINT,
) -> Path:
    """Download a public Google Drive file to `dest` through gdown, with `download`'s checksums.

    gdown answers Drive's 'cannot scan for viruses' confirmation page, which plain HTTP cannot.
    """
    expected = sha256 or _locked_checksum(checksum_key, lock_file)
    if _reuse_existing(dest, expected, checksum_key, lock_file):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    url = GDRIVE_URL.format(file_id=file_id)
    log.info("downloading %s to %s", url, dest)
    try:
        # use_cookies=False: keep gdown from reading or writing ~/.cache/gdown/cookies.txt.
        gdown.download(url=url, output=str(part), resume=True, retries=retries, use_cookies=False)
    except (gdown.exceptions.DownloadError, requests.RequestException) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"could not download {url} ({reason}); {offline_hint}") from None
    return _verify_and_move(part, dest, expected, checksum_key, lock_file)


def _locked_checksum(checksum_key: str | None, lock_file: Path) -> str | None:
    return read_checksums(lock_file).get(checksum_key) if checksum_key else None


def _reuse_existing(dest: Path, expected: str | None, key: str | None, lock_file: Path) -> bool:
    """Whether `dest` is already downloaded; a copy that fails its checksum is deleted."""
    if not dest.is_file():
        return False
    if expected is None:
        if key is not None:
            record_checksum(key, sha256_of(dest), lock_file)
        return True
    got = sha256_of(dest)
    if got == expected:
        log.info("%s already downloaded and verified", dest)
        return True
    log.warning("%s does not match sha256 %s; downloading it again", dest, expected)
    dest.unlink()
    return False


def _stream(url: str, part: Path, timeout_s: float) -> None:
    """One HTTP attempt, appending to `part` when the server honours a Range request."""
    offset = part.stat().st_size if part.is_file() else 0
    # Identity encoding: byte offsets and Content-Length must count the bytes written to disk.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
        if response.status_code == 416:  # the partial file already reaches the end: start over
            part.unlink()
            _stream(url, part, timeout_s)
            return
        if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
            raise _TransientError(f"HTTP {response.status_code} {response.reason}")
        response.raise_for_status()
        start = offset if response.status_code == 206 else 0  # a 200 answer restarts from zero
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        written = start
        with (
            part.open("ab" if start else "wb") as file,
            tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=None,
            ) as progress,
        ):
            for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                file.write(chunk)
                written += len(chunk)
                progress.update(len(chunk))
    if total is not None and written < total:
        raise _TransientError(f"connection closed after {written} of {total} bytes")


def _verify_and_move(
    part: Path, dest: Path, expected: str | None, key: str | None, lock_file: Path
) -> Path:
    """Check the finished `part` against `expected` (or record it), then move it onto `dest`."""
    got = sha256_of(part)
    if expected is not None and got != expected:
        part.unlink()
        raise UserError(
            f"{dest}: checksum mismatch: expected sha256 {expected}, got {got}; the download "
            "was deleted. Run again; if it repeats, the file at the source is not the one whose "
            f"sha256 is in the dataset's sha256 param or in {lock_file}"
        )
    os.replace(part, dest)
    if expected is None and key is not None:
        record_checksum(key, got, lock_file)
    log.info("downloaded %s (sha256 %s)", dest, got)
    return dest


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
