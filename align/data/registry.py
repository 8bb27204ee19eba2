"""The dataset registry: one file per dataset source, registered by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from align.registry import Registry
from align.schema import StrictModel

if TYPE_CHECKING:
    from align.data.download import Downloads

MASKS_DIRNAME = ".masks"
"""Ground-truth masks live in `<raw>/<dataset>/.masks/<domain>/<class>/<stem>.png`."""
SHORTCUTS_DIRNAME = ".shortcuts"
"""Masks of the spurious cue, where a dataset knows it, beside them under `.shortcuts/`."""


class DatasetSource(ABC):
    """Puts a dataset's raw images under `<raw_dir>/<domain>/<class>/<image>`.

    A subclass declares its params.yaml section as `Config` (a StrictModel whose defaults are the
    documented defaults) and whether it ships ground-truth object masks.
    """

    Config: ClassVar[type[StrictModel]]
    has_masks: ClassVar[bool] = False
    has_shortcut_masks: ClassVar[bool] = False
    """Whether each image also has a mask of its spurious cue (`shortcut_mask_path_for`)."""
    hue_jitter: ClassVar[float] = 0.3
    """Train-time hue jitter when `data.hue_jitter` is null: DomainBed's 0.3, unless the
    dataset's colours are what it studies."""

    def __init__(self, config: StrictModel) -> None:
        self.config = config

    @abstractmethod
    def domains(self) -> list[str]:
        """The domains this configuration produces, in a fixed order."""

    def declared_domains(self) -> list[str]:
        """The domains known from the configuration alone, without reading any folder."""
        return self.domains()

    @abstractmethod
    def acquire(self, raw_dir: Path, downloads: Downloads) -> None:
        """Download (through `downloads`), extract or generate into `raw_dir` (which does not
        exist yet)."""


DATASETS: Registry[type[DatasetSource]] = Registry("dataset")
register_dataset = DATASETS.register


def mask_path_for(raw_dir: Path, image_relpath: str) -> Path:
    """Where the ground-truth mask of `<domain>/<class>/<file>` is stored, if there is one."""
    return raw_dir / MASKS_DIRNAME / Path(image_relpath).with_suffix(".png")


def shortcut_mask_path_for(raw_dir: Path, image_relpath: str) -> Path:
    """Where the mask of the spurious cue of `<domain>/<class>/<file>` is stored, if any."""
    return raw_dir / SHORTCUTS_DIRNAME / Path(image_relpath).with_suffix(".png")
