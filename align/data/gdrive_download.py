"""Downloading a public Google Drive file through gdown, with the checks of an HTTP download.

gdown answers Drive's 'cannot scan for viruses' confirmation page, which plain HTTP cannot; a
thread watches its progress to cancel a stalled transfer, or one still running at its deadline.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gdown
import requests

from align.data.checksums import locked_checksum, record_checksum, reuse_existing, verify_and_move
from align.data.http_download import OFFLINE_HINT, STALL_BYTES, one_line, partial_path
from align.errors import UserError

log = logging.getLogger(__name__)

GDRIVE_URL = "https://drive.google.com/uc?id={file_id}"


def gdrive_url(file_id: str) -> str:
    """The public download URL of the Google Drive file `file_id`."""
    return GDRIVE_URL.format(file_id=file_id)


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
    expected = sha256 or locked_checksum(checksum_key, lock_file)
    record = record or functools.partial(record_checksum, lock_file=lock_file)
    if reuse_existing(dest, expected, checksum_key, record):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    url = gdrive_url(file_id)
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
            reason = one_line(error)
            raise UserError(f"could not download {url} ({reason}); {offline_hint}") from None
    return verify_and_move(part, dest, expected, checksum_key, lock_file, url, record)


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
