"""A data root's downloads: where they go, how patient they are, and when their checksums are
pinned.

Sources download through `Downloads`, over HTTP(S) (`align.data.http_download`) or from Google
Drive (`align.data.gdrive_download`); each download is verified against the lock file
(`align.data.checksums`). The sha256 recorded from a download is pinned only once the dataset
source has extracted it and found its layout (`Downloads.provisional`): a valid archive of the
wrong data is deleted instead of being pinned and reused forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from align.data.checksums import (
    LOCK_NAME,
    locked_checksum,
    read_checksums,
    record_checksum,
    write_checksums,
)
from align.data.gdrive_download import download_gdrive, gdrive_url
from align.data.http_download import download, partial_path
from align.errors import UserError
from align.schema import StrictModel

log = logging.getLogger(__name__)


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
        record = self._fetching(dest, gdrive_url(file_id), options)
        return download_gdrive(file_id, dest, lock_file=self.lock_file,
                               stall_s=self.config.stall_s, total_s=self.config.total_s,
                               record=record, **options)

    def _fetching(
        self, dest: Path, url: str, options: dict[str, Any]
    ) -> Callable[[str, str], None]:
        """Remember where `dest` comes from; the returned `record` keeps a new sha256 unpinned."""
        key = options.get("checksum_key")
        locked = options.get("sha256") is None and locked_checksum(key, self.lock_file) is not None
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
