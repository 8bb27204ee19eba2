"""Terra Incognita, built as DomainBed does from the Caltech Camera Traps ECCV'18 release.

DomainBed (`domainbed/scripts/download.py`) keeps the images taken at four camera locations whose
annotation names one of ten classes and writes them to `location_<n>/<class>/<file>`; an image
annotated with two kept classes lands in both class folders, as there.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from align.data.archives import extract_archive, scratch_folder
from align.data.download import Downloads
from align.data.layout import copy_domains, link_or_copy, visible_files
from align.data.registry import DatasetSource, register_dataset
from align.errors import UserError
from align.schema import HttpUrl, StrictModel

log = logging.getLogger(__name__)

LILA = "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps"
CAMERA_TRAPS_KEYS = frozenset({"images", "annotations", "categories"})
DOMAINBED_ANNOTATIONS_PREFIX = "caltech_images_"
"""DomainBed reads `caltech_images_20210113.json`, which covers every image in one file."""
OFFLINE_HINT = (
    "offline, set datasets.terra_incognita.images_archive and annotations_archive to local "
    "copies, or datasets.terra_incognita.folder to an already built folder"
)


class TerraIncognitaConfig(StrictModel):
    images_url: HttpUrl = f"{LILA}/eccv_18_all_images_sm.tar.gz"
    annotations_url: HttpUrl = f"{LILA}/eccv_18_annotations.tar.gz"
    """A .tar.gz or .zip of COCO camera-traps JSON (DomainBed's labels/caltech_camera_traps.json.zip
    works too)."""
    images_sha256: str | None = None
    annotations_sha256: str | None = None
    images_archive: Path | None = None
    """A local eccv_18_all_images_sm.tar.gz (offline use)."""
    annotations_archive: Path | None = None
    """A local eccv_18_annotations.tar.gz (offline use)."""
    folder: Path | None = None
    """An already built folder holding location_<n>/<class>/ (offline use)."""
    locations: list[int] = [38, 43, 46, 100]
    classes: list[str] = [
        "bird", "bobcat", "cat", "coyote", "dog",
        "empty", "opossum", "rabbit", "raccoon", "squirrel",
    ]


@register_dataset("terra_incognita")
class TerraIncognita(DatasetSource):
    """Sources in order of precedence: `folder`, then each archive, else its URL."""

    Config = TerraIncognitaConfig

    def domains(self) -> list[str]:
        return [f"location_{n}" for n in self.config.locations]

    def acquire(self, raw_dir: Path, downloads: Downloads) -> None:
        config = self.config
        if config.folder is not None:
            counts = copy_domains(config.folder, raw_dir, self.domains(), config.classes)
        else:
            # The small annotations first, checked: a wrong URL or param fails before hours of
            # image download.
            annotations_archive = config.annotations_archive or self._download(
                downloads, config.annotations_url, config.annotations_sha256
            )
            with scratch_folder(raw_dir) as scratch:
                with downloads.provisional(annotations_archive):
                    annotations = extract_archive(annotations_archive, scratch / "annotations")
                    camera_traps = load_camera_traps(annotations)
                selected = select_images(camera_traps, config.locations, config.classes)
                self._check_selected(selected)
                images_archive = config.images_archive or self._download(
                    downloads, config.images_url, config.images_sha256
                )
                with downloads.provisional(images_archive):
                    images = extract_archive(images_archive, scratch / "images")
                    counts = self._link_selected(selected, images, raw_dir)
        report = counts_path(raw_dir)
        report.write_text(json.dumps(counts, indent=2) + "\n")
        for domain, per_class in counts.items():
            log.info("%s: %d images %s", domain, sum(per_class.values()), per_class)
        log.info("image counts per location and class written to %s", report)

    def _download(self, downloads: Downloads, url: str, sha256: str | None) -> Path:
        name = PurePosixPath(urlsplit(url).path).name
        return downloads.http(url, name, sha256=sha256, checksum_key=f"terra_incognita:{name}",
                              offline_hint=OFFLINE_HINT)

    def _check_selected(self, selected: list[tuple[str, str, str]]) -> None:
        """Every location has annotated images of a wanted class: else the params (or the
        annotations) are wrong, and the images archive would not help."""
        empty = sorted(set(self.domains()) - {domain for domain, _, _ in selected},
                       key=self.domains().index)
        if empty:
            raise UserError(
                f"terra_incognita: no annotated images for {', '.join(empty)} with a class in "
                "datasets.terra_incognita.classes; check the locations and classes (or the "
                "annotations)"
            )

    def _link_selected(
        self, selected: list[tuple[str, str, str]], images_root: Path, raw_dir: Path
    ) -> dict[str, dict[str, int]]:
        # By file name: the archive's top folder is not part of the annotations' `file_name`.
        images = {path.name: path for path in visible_files(images_root)}
        counts: dict[str, Counter[str]] = {domain: Counter() for domain in self.domains()}
        missing = []
        for domain, class_name, file_name in selected:
            image = images.get(PurePosixPath(file_name).name)
            if image is None:
                missing.append(file_name)
                continue
            link_or_copy(image, raw_dir / domain / class_name / image.name)
            counts[domain][class_name] += 1
        if missing:
            log.warning(
                "%d annotated images are not in the images archive and were skipped (e.g. %s)",
                len(missing), missing[0],
            )
        for domain, per_class in counts.items():
            if not per_class:
                raise UserError(
                    f"terra_incognita: no images for {domain} with a class in "
                    f"datasets.terra_incognita.classes ({len(missing)} annotated images were "
                    "missing from the images archive); check the locations, classes and archives"
                )
        return {domain: dict(sorted(per_class.items())) for domain, per_class in counts.items()}


def counts_path(raw_dir: Path) -> Path:
    """Beside the raw folder, which must hold nothing but <domain>/ folders."""
    return raw_dir.parent / "terra_incognita.counts.json"


def load_camera_traps(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The COCO camera-traps annotation files under `root`, each as (path, parsed JSON).

    DomainBed's single `caltech_images_*.json` when present; otherwise every JSON with the
    COCO camera-traps keys, since the ECCV'18 release spreads its images over five split files
    (train, cis_val, cis_test, trans_val, trans_test).
    """
    candidates = sorted(path for path in root.rglob("*.json") if not path.name.startswith("."))
    domainbed = [path for path in candidates if path.name.startswith(DOMAINBED_ANNOTATIONS_PREFIX)]
    found = []
    for path in domainbed[-1:] or candidates:
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"{path.name}: annotation file is not valid JSON ({error})") from None
        if isinstance(data, dict) and data.keys() >= CAMERA_TRAPS_KEYS:
            found.append((path, data))
    if not found:
        raise UserError(
            "no COCO camera-traps JSON (keys: images, annotations, categories) in the "
            "annotations archive; check datasets.terra_incognita.annotations_url/archive"
        )
    log.info("annotations read from %s", ", ".join(path.name for path, _ in found))
    return found


def select_images(
    annotation_files: list[tuple[Path, dict[str, Any]]], locations: list[int], classes: list[str]
) -> list[tuple[str, str, str]]:
    """Sorted, distinct (domain, class, file_name) of the images to keep.

    An image is kept at each of its annotated categories that is in `classes`, if its `location`
    (an int or a string, depending on the release) is one of `locations`.
    """
    wanted_locations = {str(location) for location in locations}
    selected: set[tuple[str, str, str]] = set()
    for path, data in annotation_files:
        try:
            category_names = {category["id"]: category["name"] for category in data["categories"]}
            images = {
                image["id"]: image
                for image in data["images"]
                if str(image.get("location")) in wanted_locations
            }
            for annotation in data["annotations"]:
                image = images.get(annotation["image_id"])
                class_name = category_names.get(annotation["category_id"])
                if image is not None and class_name in classes:
                    domain = f"location_{image['location']}"
                    selected.add((domain, class_name, image["file_name"]))
        except (KeyError, TypeError) as error:
            raise UserError(
                f"{path.name}: not in the COCO camera-traps schema (missing {error})"
            ) from None
    return sorted(selected)
