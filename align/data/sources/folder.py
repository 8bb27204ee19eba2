"""Any folder in DomainBed layout `<root>/<domain>/<class>/*.{jpg,png}` (PACS, Office-Home, ...)."""

from __future__ import annotations

import logging
from pathlib import Path

from align.data.download import Downloads
from align.data.layout import copy_domains, subfolder_names
from align.data.registry import DatasetSource, register_dataset
from align.errors import UserError
from align.schema import StrictModel

log = logging.getLogger(__name__)


class FolderConfig(StrictModel):
    root: Path | None = None
    """The folder holding <domain>/<class>/ images (required)."""
    domains: list[str] | None = None
    """The domains to use, in order; all sub-folders of `root` when unset."""


@register_dataset("folder")
class Folder(DatasetSource):
    Config = FolderConfig

    def domains(self) -> list[str]:
        if self.config.domains is not None:
            return list(self.config.domains)
        return subfolder_names(self._root())

    def declared_domains(self) -> list[str]:
        return list(self.config.domains or [])

    def acquire(self, raw_dir: Path, downloads: Downloads | None = None) -> None:
        """Links the files of `root` (nothing is downloaded)."""
        counts = copy_domains(self._root(), raw_dir, self.domains())
        for domain, per_class in counts.items():
            log.info("%s: %d files in %d classes", domain, sum(per_class.values()), len(per_class))

    def _root(self) -> Path:
        root = self.config.root
        if root is None:
            raise UserError(
                "set datasets.folder.root to a folder in DomainBed layout <root>/<domain>/<class>/*"
            )
        if not root.is_dir():
            raise UserError(f"datasets.folder.root: {root} is not a folder")
        return root
