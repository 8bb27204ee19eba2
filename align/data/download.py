"""Verified downloads (HTTP with resume and retries, or Google Drive) and safe archive extraction.

A download streams into `<dest>.part`, is checked to be an archive (a quota, login or captive
portal page served with HTTP 200 is not) and against a sha256, and only then moved into place, so
`dest` existing means it is complete and verified. The expected sha256 comes from a param or from
the lock file `<data.root>/checksums.json` (committed for the default root `data`); a file with
neither has the sha256 of its first download recorded there, so every later download (on any
machine) is checked against it.

Patience is bounded (`data.download`): a transfer that receives less than `STALL_BYTES` in
`stall_s` seconds (a silent server, a trickle) is abandoned, and every retry (refused connection,
server error, stall, transfer cut short) happens within `retry_s` seconds from the first failure
since the download last got further. Whatever the server does, one download makes at most
`attempts` requests and takes at most `total_s` seconds; retries back off exponentially.

Through `Downloads`, the sha256 recorded from a download is pinned only once the dataset source has
extracted it and found its layout (`Downloads.provisional`): a valid archive of the wrong data is
deleted instead of being pinned and reused forever.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import gdown
import requests
from pydantic import Field
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from align.atomic import write_text_atomically
from align.errors import UserError
from align.schema import StrictModel, http_url_problem

log = logging.getLogger(__name__)

LOCK_NAME = "checksums.json"
"""The lock file in the data root: checksum key (`<dataset>:<file name>`, e.g. `vlcs:VLCS.tar.gz`)
-> sha256 of that file."""

GDRIVE_URL = "https://drive.google.com/uc?id={file_id}"
OFFLINE_HINT = "offline, set the dataset's `archive` (or `folder`) param to a local copy instead"
CHUNK_BYTES = 1 << 20
RETRY_STATUS = frozenset({408, 429, *range(500, 600)})
"""Statuses that say 'try again later', not 'this URL is wrong'."""
CONNECT_RETRIES = 2
"""A refused or unresolvable connection usually means no network: said within seconds."""
STALL_BYTES = 1024
"""A transfer receiving fewer bytes than this in `stall_s` seconds is stalled; a failed attempt
that takes `.part` this much further than it has ever been is progress (a new streak of retries)."""
MAX_BACKOFF_S = 60.0
"""The longest wait between two attempts (except a shorter Retry-After)."""
ARCHIVE_SIGNATURES = (
    (0, b"\x1f\x8b"),  # gzip (.tar.gz, .tgz)
    (0, b"PK\x03\x04"),  # zip
    (0, b"PK\x05\x06"),  # empty zip
    (0, b"BZh"),  # bzip2
    (0, b"\xfd7zXZ\x00"),  # xz
    (257, b"ustar"),  # uncompressed POSIX tar
)


class DownloadConfig(StrictModel):
    """How patient downloads are (params `data.download`)."""

    stall_s: float = Field(30.0, gt=0)
    """A transfer that receives less than 1 KiB in this many seconds (a silent server, a trickle)
    is abandoned and resumed, within `retry_s`; also the time allowed to connect."""
    retry_s: float = Field(120.0, ge=0)
    """Retries of a download (refused connection, 5xx, stall, cut transfer) stop this many
    seconds after the first failure since the download last got further (its `.part` longer
    than ever before); 0 makes one attempt."""
    attempts: int = Field(100, ge=1)
    """Requests one download may make in all, progress or not (a server that cuts every transfer
    a little further); then it gives up, keeping the `.part` for the next run to resume."""
    total_s: float = Field(21600.0, gt=0)
    """Seconds one download may take in all, transfers and retries included (6 h: the 6 GB Terra
    Incognita images at 300 kB/s); then it gives up, keeping the `.part` to resume."""


@dataclass
class _Fetched:
    """Where a download of this acquire came from and how its sha256 is pinned."""

    url: str
    key: str | None
    locked: bool
    """Its sha256 was in the lock file before this acquire (e.g. committed)."""
    unpinned: tuple[str, str] | None = None
    """(checksum key, sha256) recorded from the download, waiting for `Downloads.provisional`."""


@dataclass(frozen=True)
class Downloads:
    """Where a data root keeps downloaded archives and their checksum lock file, and how patient
    downloads are; sources receive one per acquire in `acquire`.

    A sha256 recorded from a download (no `sha256` param, no lock file entry) is pinned only when
    the source's checks of the archive pass: the source wraps its extraction and layout checks
    in `provisional(archive)`."""

    root: Path
    """`data.root`."""
    config: DownloadConfig = field(default_factory=DownloadConfig)
    _fetched: dict[Path, _Fetched] = field(default_factory=dict, init=False, repr=False,
                                           compare=False)

    @property
    def folder(self) -> Path:
        """`<data.root>/downloads/`: outside `raw/`, which the acquire stage replaces whole."""
        return self.root / "downloads"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    def http(self, url: str, name: str, **options: Any) -> Path:
        """`download(url, <folder>/<name>, ...)` with this root's lock file and patience."""
        config = self.config
        dest = self.folder / name
        return download(url, dest, lock_file=self.lock_file, stall_s=config.stall_s,
                        retry_s=config.retry_s, attempts=config.attempts, total_s=config.total_s,
                        record=self._fetching(dest, url, options), **options)

    def gdrive(self, file_id: str, name: str, **options: Any) -> Path:
        """`download_gdrive(file_id, <folder>/<name>, ...)` with this root's lock file."""
        dest = self.folder / name
        record = self._fetching(dest, GDRIVE_URL.format(file_id=file_id), options)
        return download_gdrive(file_id, dest, lock_file=self.lock_file,
                               stall_s=self.config.stall_s, total_s=self.config.total_s,
                               record=record, **options)

    def _fetching(
        self, dest: Path, url: str, options: dict[str, Any]
    ) -> Callable[[str, str], None]:
        """Remember where `dest` comes from; the returned `record` keeps a new sha256 unpinned."""
        key = options.get("checksum_key")
        locked = options.get("sha256") is None and _locked_checksum(key, self.lock_file) is not None
        fetched = self._fetched[dest] = _Fetched(url, key, locked)

        def record(key: str, digest: str) -> None:
            fetched.unpinned = (key, digest)

        return record

    @contextmanager
    def provisional(self, archive: Path) -> Iterator[None]:
        """Pin the sha256 recorded from `archive`'s download when the block (its extraction and
        the dataset's layout checks) succeeds.

        A UserError in the block deletes such a download and leaves its sha256 unpinned, so the
        next run downloads it again instead of failing on the same wrong file; its message says
        so in one line. A download pinned before this acquire is kept, and the message says how
        to refresh it; a local archive (a param) is not ours to touch.
        """
        fetched = self._fetched.get(archive)
        try:
            yield
        except UserError as error:
            if fetched is not None and fetched.unpinned is not None:
                archive.unlink(missing_ok=True)
                del self._fetched[archive]
                raise UserError(
                    f"{error}; the download was deleted and its checksum not pinned, so the next"
                    f" run downloads it again: check the URL {fetched.url}"
                ) from None
            if fetched is not None and fetched.locked and fetched.key is not None:
                dataset = fetched.key.partition(":")[0]
                raise UserError(
                    f"{error}; {archive} matches the sha256 pinned in {self.lock_file}: if that"
                    f" was pinned from a wrong download, `align acquire --dataset {dataset}"
                    " --refresh` deletes it and its checksum and downloads it again"
                ) from None
            raise
        if fetched is not None and fetched.unpinned is not None:
            record_checksum(*fetched.unpinned, self.lock_file)
            fetched.unpinned = None

    def refresh(self, dataset: str) -> None:
        """Delete `dataset`'s downloads whose sha256 the lock file pins (keys `<dataset>:<file>`)
        and those entries, so that they are downloaded and checked again."""
        checksums = read_checksums(self.lock_file)
        keys = [key for key in checksums if key.partition(":")[0] == dataset]
        for key in keys:
            dest = self.folder / key.partition(":")[2]
            dest.unlink(missing_ok=True)
            partial_path(dest).unlink(missing_ok=True)
            del checksums[key]
            log.info("refresh: deleted %s and unpinned its sha256 (%s)", dest, key)
        if keys:
            write_checksums(checksums, self.lock_file)


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


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


def archive_problem(path: Path) -> str | None:
    """None if `path` starts like a tar, gzip, bzip2, xz or zip archive, else what it is."""
    with path.open("rb") as file:
        head = file.read(512)
    if any(head[at : at + len(magic)] == magic for at, magic in ARCHIVE_SIGNATURES):
        return None
    if b"<html" in head.lower() or head.lstrip().lower().startswith(b"<!doctype html"):
        return "got an HTML page (a quota, login or error page?), not an archive"
    return f"not a tar, gzip, bzip2, xz or zip archive (it starts with {head[:16]!r})"


@dataclass
class _Limits:
    """What one whole download may use, whatever the server does: `attempts` requests and
    `total_s` seconds from `started`; `failures` counts every failed attempt of every streak."""

    attempts: int
    total_s: float
    started: float = field(default_factory=time.monotonic)
    failures: int = 0

    @property
    def deadline(self) -> float:
        return self.started + self.total_s

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class _BudgetRetry(Retry):
    """urllib3's Retry (counts, exponential back-off, Retry-After) for one streak of failures,
    also exhausted when the next attempt could not start within `budget_s` seconds of the
    streak's first failure, or would pass the whole download's `limits`. `started` (that
    failure's time.monotonic()), `failures` (one line each) and `limits` are passed on to every
    copy that Retry makes, so they describe the whole streak."""

    def __init__(
        self, *args: Any, budget_s: float, limits: _Limits, started: float | None = None,
        failures: list[str] | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.budget_s = budget_s
        self.limits = limits
        self.started = started
        self.failures = [] if failures is None else failures

    @property
    def deadline(self) -> float:
        streak = math.inf if self.started is None else self.started + self.budget_s
        return min(streak, self.limits.deadline)

    def new(self, **kw: Any) -> _BudgetRetry:
        return super().new(budget_s=self.budget_s, limits=self.limits, started=self.started,
                           failures=self.failures, **kw)

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None,
                  *args: Any, **kwargs: Any) -> _BudgetRetry:
        if self.started is None:  # set before `new` copies it
            self.started = time.monotonic()
        reason = _one_line(error) if error else f"HTTP {response.status} {response.reason}"
        self.failures.append(reason)
        self.limits.failures += 1
        log.warning("download attempt failed: %s", reason)
        return super().increment(method, url, response, error, *args, **kwargs)

    def is_exhausted(self) -> bool:
        return (
            super().is_exhausted()
            or self.limits.failures >= self.limits.attempts
            or time.monotonic() + self.get_backoff_time() > self.deadline
        )

    def get_retry_after(self, response: Any) -> float | None:
        wait = super().get_retry_after(response)  # a server may ask for hours: the budget rules
        return None if wait is None else min(wait, max(0.0, self.deadline - time.monotonic()))


class _TransferError(Exception):
    """The body stopped short of its end: stalled, or the connection was cut."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received
        """Bytes this attempt wrote before it failed."""


def download(
    url: str,
    dest: Path,
    *,
    lock_file: Path,
    sha256: str | None = None,
    checksum_key: str | None = None,
    stall_s: float = 30.0,
    retry_s: float = 120.0,
    attempts: int = 100,
    total_s: float = 21600.0,
    retries: int = 4,
    backoff_s: float = 1.0,
    offline_hint: str = OFFLINE_HINT,
    record: Callable[[str, str], None] | None = None,
) -> Path:
    """Download the archive at `url` to `dest` over HTTP(S), verified; a verified `dest` already
    there is reused.

    An interrupted transfer resumes from `<dest>.part` where the server accepts Range requests.
    Failures are retried up to `retries` times (a refused connection `CONNECT_RETRIES` times),
    waiting `backoff_s * 2**(n - 1)` (at most `MAX_BACKOFF_S`) before the n-th retry after the
    first, all within `retry_s` seconds of the first failure; an attempt that left `.part` at
    least `STALL_BYTES` longer than ever before starts a new count, so a long download may be cut
    many times (a server that ignores Range and cuts every transfer at the same place does not).
    Whatever happens, the download gives up after `attempts` requests or `total_s` seconds.
    See `DownloadConfig` for `stall_s`.
    The checksum is `sha256` when given, else the lock file's entry for `checksum_key`, else the
    download's own sha256 is recorded there under `checksum_key`, or passed to `record(key,
    sha256)` instead when given.
    """
    problem = http_url_problem(url)
    if problem:
        raise UserError(f"cannot download {url!r}: {problem}; {offline_hint}")
    expected = sha256 or _locked_checksum(checksum_key, lock_file)
    record = record or functools.partial(record_checksum, lock_file=lock_file)
    if _reuse_existing(dest, expected, checksum_key, record):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    log.info("downloading %s to %s", url, dest)

    limits = _Limits(attempts, total_s)

    def fresh_retry() -> _BudgetRetry:
        return _BudgetRetry(
            total=retries, connect=CONNECT_RETRIES, status_forcelist=RETRY_STATUS,
            backoff_factor=backoff_s, backoff_max=MAX_BACKOFF_S, raise_on_status=False,
            budget_s=retry_s, limits=limits,
        )

    def give_up(reason: str) -> UserError:
        failed = limits.failures
        if failed >= attempts:
            bound = f"data.download.attempts = {attempts} per download"
        elif time.monotonic() + retry.get_backoff_time() > limits.deadline:
            bound = f"data.download.total_s = {total_s:g} s per download"
        else:
            bound = (f"retries without progress stop after data.download.retry_s = {retry_s:g} s"
                     f" or {retries} retries")
        return UserError(
            f"could not download {url} ({reason}); gave up after {failed} failed attempt"
            f"{'s' * (failed != 1)} in {limits.elapsed():.0f} s ({bound}); {offline_hint}"
        )

    retry = fresh_retry()
    furthest = part.stat().st_size if part.is_file() else 0

    with requests.Session() as session:
        while True:
            adapter = HTTPAdapter(max_retries=retry)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            offset = part.stat().st_size if part.is_file() else 0
            try:
                response = session.get(url, headers=_request_headers(offset), stream=True,
                                       timeout=(stall_s, stall_s))
            except requests.RequestException as error:  # the adapter's retries are used up
                raise give_up(retry.failures[-1] if retry.failures else _one_line(error)) from None
            with response:
                # What the adapter's retries used counts on: one budget across resumed attempts.
                retry = response.raw.retries or retry
                if response.status_code == 416 and offset:  # `part` reaches the end: start over
                    part.unlink()
                    continue
                if response.status_code in RETRY_STATUS:
                    raise give_up(f"HTTP {response.status_code} {response.reason}")
                if response.status_code >= 400:
                    raise UserError(f"could not download {url}: HTTP {response.status_code} "
                                    f"{response.reason}; {offline_hint}")
                try:
                    # A 200 answer to a Range request restarts from zero.
                    _receive(response, part, offset if response.status_code == 206 else 0,
                             stall_s, limits.deadline)
                    break
                except _TransferError as error:
                    # Only getting further than ever starts a new streak: a server that ignores
                    # Range and cuts at the same place receives a lot, again and again.
                    size = part.stat().st_size if part.is_file() else 0
                    if size >= furthest + STALL_BYTES:
                        retry = fresh_retry()
                    furthest = max(furthest, size)
                    try:
                        retry = retry.increment("GET", url, error=error)
                    except MaxRetryError:
                        raise give_up(str(error)) from None
            retry.sleep()
    return _verify_and_move(part, dest, expected, checksum_key, lock_file, url, record)


def _request_headers(offset: int) -> dict[str, str]:
    # Identity encoding: byte offsets and Content-Length must count the bytes written to disk.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return headers


def _receive(
    response: requests.Response, part: Path, start: int, stall_s: float, deadline: float
) -> None:
    """Write the body to `part` from byte `start`, failing when it stalls, is cut short, or is
    still going at `deadline` (time.monotonic())."""
    length = response.headers.get("Content-Length")
    total = start + int(length) if length is not None else None
    written = start
    window_start, window_bytes = time.monotonic(), 0
    with (
        part.open("ab" if start else "wb") as file,
        tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=None,
        ) as progress,
    ):
        while True:
            try:
                # read1: whatever arrived (up to a chunk), so a trickle still shows and is timed;
                # the socket's read timeout (stall_s) bounds each wait.
                chunk = response.raw.read1(CHUNK_BYTES)
            except ReadTimeoutError:
                raise _TransferError(f"stalled: no data for {stall_s:g} s (data.download.stall_s)",
                                     written - start) from None
            except ProtocolError as error:
                raise _TransferError(f"connection broken: {_one_line(error)}",
                                     written - start) from None
            if not chunk:
                break
            file.write(chunk)
            written += len(chunk)
            progress.update(len(chunk))
            window_bytes += len(chunk)
            if time.monotonic() >= deadline:  # a trickle just above the stall threshold
                raise _TransferError(f"still incomplete after {written} bytes when its time ran"
                                     " out", written - start)
            if time.monotonic() - window_start >= stall_s:
                if window_bytes < STALL_BYTES:
                    raise _TransferError(
                        f"stalled: {window_bytes} bytes in {stall_s:g} s (data.download.stall_s)",
                        written - start,
                    )
                window_start, window_bytes = time.monotonic(), 0
    if total is not None and written < total:
        raise _TransferError(f"connection closed after {written} of {total} bytes",
                             written - start)


def download_gdrive(
    file_id: str,
    dest: Path,
    *,
    lock_file: Path,
    sha256: str | None = None,
    checksum_key: str | None = None,
    stall_s: float = 30.0,
    total_s: float = 21600.0,
    retries: int = 4,
    offline_hint: str = OFFLINE_HINT,
    record: Callable[[str, str], None] | None = None,
) -> Path:
    """Download a public Google Drive file to `dest` through gdown, with `download`'s checks.

    gdown answers Drive's 'cannot scan for viruses' confirmation page, which plain HTTP cannot.
    gdown retries `retries` times itself; a transfer that receives less than `STALL_BYTES` in
    `stall_s` seconds, or still runs `total_s` seconds after the start, is cancelled (the `.part`
    file stays, and the next run resumes it).
    """
    expected = sha256 or _locked_checksum(checksum_key, lock_file)
    record = record or functools.partial(record_checksum, lock_file=lock_file)
    if _reuse_existing(dest, expected, checksum_key, record):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    url = GDRIVE_URL.format(file_id=file_id)
    log.info("downloading %s to %s", url, dest)
    with _stall_watch(stall_s, time.monotonic() + total_s) as watch:
        try:
            # use_cookies=False: keep gdown from reading or writing ~/.cache/gdown/cookies.txt.
            gdown.download(
                url=url, output=str(part), resume=True, retries=retries, use_cookies=False,
                timeout=(stall_s, stall_s), progress=watch.progress, cancel=watch.cancel,
            )
        except gdown.exceptions.DownloadCancelled:
            why = (f"not finished in data.download.total_s = {total_s:g} s" if watch.out_of_time
                   else f"stalled, less than {STALL_BYTES} bytes in {stall_s:g} s"
                   " (data.download.stall_s)")
            raise UserError(
                f"could not download {url}: {why}; run again to resume, or {offline_hint}"
            ) from None
        except (gdown.exceptions.DownloadError, requests.RequestException) as error:
            reason = _one_line(error)
            raise UserError(f"could not download {url} ({reason}); {offline_hint}") from None
    return _verify_and_move(part, dest, expected, checksum_key, lock_file, url, record)


@dataclass
class _StallWatch:
    """gdown's progress callback and cancel event: a thread sets `cancel` when a window of
    `stall_s` seconds passes with less than `STALL_BYTES` received, or at the deadline
    (`out_of_time`)."""

    stall_s: float
    cancel: threading.Event = field(default_factory=threading.Event)
    received: int = 0
    out_of_time: bool = False

    def progress(self, so_far: int, total: int | None) -> None:
        self.received = so_far


@contextmanager
def _stall_watch(stall_s: float, deadline: float) -> Iterator[_StallWatch]:
    """A `_StallWatch` checked by a thread until the block ends; `deadline`: time.monotonic()."""
    watch = _StallWatch(stall_s)
    done = threading.Event()

    def check() -> None:
        seen, window_end = watch.received, time.monotonic() + stall_s
        while not done.wait(max(0.0, min(window_end, deadline) - time.monotonic())):
            now = time.monotonic()
            if now >= deadline:
                watch.out_of_time = True
                watch.cancel.set()
                return
            if now >= window_end:
                if watch.received - seen < STALL_BYTES:
                    watch.cancel.set()
                    return
                seen, window_end = watch.received, now + stall_s

    thread = threading.Thread(target=check, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        done.set()
        thread.join()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _locked_checksum(checksum_key: str | None, lock_file: Path) -> str | None:
    return read_checksums(lock_file).get(checksum_key) if checksum_key else None


def _reuse_existing(
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


def _verify_and_move(
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
