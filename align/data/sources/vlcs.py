"""VLCS (Fang et al. 2013) in DomainBed's layout, from DomainBed's public archive."""

from __future__ import annotations

import logging
from pathlib import Path

from align.data.archives import extract_archive, scratch_folder
from align.data.download import Downloads
from align.data.layout import copy_domains
from align.data.registry import DatasetSource, register_dataset
from align.schema import HttpUrl, StrictModel

log = logging.getLogger(__name__)

ARCHIVE_NAME = "VLCS.tar.gz"
CHECKSUM_KEY = f"vlcs:{ARCHIVE_NAME}"
OFFLINE_HINT = (
    "offline, set datasets.vlcs.archive to a local VLCS.tar.gz "
    "or datasets.vlcs.folder to an extracted copy"
)


class VLCSConfig(StrictModel):
    gdrive_id: str = "1skwblH1_okBwxWxmRsp9_qi15hyPpxg8"
    """Google Drive file id of DomainBed's VLCS.tar.gz."""
    url: HttpUrl | None = None
    """An HTTP(S) mirror of VLCS.tar.gz, used instead of Google Drive when set."""
    sha256: str | None = None
    """Expected checksum; when unset, <data.root>/checksums.json records it on first download."""
    archive: Path | None = None
    """A local VLCS.tar.gz to extract instead of downloading (offline use)."""
    folder: Path | None = None
    """An already extracted folder holding <domain>/<class>/ (offline use)."""
    domains: list[str] = ["Caltech101", "LabelMe", "SUN09", "VOC2007"]


@register_dataset("vlcs")
class VLCS(DatasetSource):
    """Sources in order of precedence: `folder`, `archive`, `url`, `gdrive_id`."""

    Config = VLCSConfig

    def domains(self) -> list[str]:
        return list(self.config.domains)

    def acquire(self, raw_dir: Path, downloads: Downloads) -> None:
        if self.config.folder is not None:
            self._copy_from(self.config.folder, raw_dir)
            return
        archive = self.config.archive or self._download(downloads)
        with downloads.provisional(archive), scratch_folder(raw_dir) as scratch:
            self._copy_from(extract_archive(archive, scratch / "extracted"), raw_dir)

    def _download(self, downloads: Downloads) -> Path:
        options = {"sha256": self.config.sha256, "checksum_key": CHECKSUM_KEY,
                   "offline_hint": OFFLINE_HINT}
        if self.config.url is not None:
            return downloads.http(self.config.url, ARCHIVE_NAME, **options)
        return downloads.gdrive(self.config.gdrive_id, ARCHIVE_NAME, **options)

    def _copy_from(self, folder: Path, raw_dir: Path) -> None:
        counts = copy_domains(domains_root(folder, self.domains()), raw_dir, self.domains())
        for domain, per_class in counts.items():
            log.info("%s: %d files (%s)", domain, sum(per_class.values()), per_class)


def domains_root(folder: Path, domains: list[str]) -> Path:
    """`folder` itself or its `VLCS/` child (as DomainBed's archive unpacks), whichever holds
    the domains; `folder` when neither does, so the missing-domain error names it."""
    for candidate in (folder, folder / "VLCS"):
        if any((candidate / domain).is_dir() for domain in domains):
            return candidate
    return folder
