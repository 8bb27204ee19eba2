"""Downloading a file over HTTP(S), resuming and retrying within bounds.

A download streams into `<dest>.part` and is moved into place only once verified (see
`align.data.checksums`), so `dest` existing means it is complete.

Patience is bounded (`data.download`): a transfer that receives less than `STALL_BYTES` in
`stall_s` seconds (a silent server, a trickle) is abandoned, and every retry (refused connection,
server error, stall, transfer cut short) happens within `retry_s` seconds from the first failure
since the download last got further. Whatever the server does, one download makes at most
`attempts` requests and takes at most `total_s` seconds; retries back off exponentially.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from align.data.checksums import locked_checksum, record_checksum, reuse_existing, verify_and_move
from align.errors import UserError
from align.schema import http_url_problem

log = logging.getLogger(__name__)

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


def partial_path(dest: Path) -> Path:
    """Where the download of `dest` streams until it is verified: `<dest>.part`."""
    return dest.with_name(dest.name + ".part")


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
        reason = one_line(error) if error else f"HTTP {response.status} {response.reason}"
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
    expected = sha256 or locked_checksum(checksum_key, lock_file)
    record = record or functools.partial(record_checksum, lock_file=lock_file)
    if reuse_existing(dest, expected, checksum_key, record):
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
                raise give_up(retry.failures[-1] if retry.failures else one_line(error)) from None
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
    return verify_and_move(part, dest, expected, checksum_key, lock_file, url, record)


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
                raise _TransferError(f"connection broken: {one_line(error)}",
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


def one_line(error: BaseException) -> str:
    """`error`'s message on one line, for a UserError."""
    return " ".join(str(error).split())
