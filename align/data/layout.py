"""DomainBed's folder layout `<root>/<domain>/<class>/<image>`, and filling a raw folder from it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from align.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def is_image_file(path: Path) -> bool:
    """An image by its suffix, in any case; hidden files (macOS `._x.jpg` forks) are not images."""
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    return path.is_file()


def subfolder_names(folder: Path) -> list[str]:
    """The sorted names of the non-hidden folders directly inside `folder`."""
    names = (entry.name for entry in folder.iterdir() if entry.is_dir())
    return sorted(name for name in names if not name.startswith("."))


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (no extra disk space), copying where a link is impossible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or one that refuses hard links
        shutil.copy2(source, target)


def copy_domains(
    source_root: Path,
    raw_dir: Path,
    domains: list[str],
    classes: list[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Link the images of `<source_root>/<domain>/<class>/` into `<raw_dir>/<domain>/<class>/`.

    Only `classes` are kept when given; files that are not images are skipped. Returns the image
    count per domain and class. A missing domain, or one without images, is a UserError.
    """
    if not source_root.is_dir():
        raise UserError(f"{source_root}: no such folder")
    missing = [domain for domain in domains if not (source_root / domain).is_dir()]
    if missing:
        found = ", ".join(subfolder_names(source_root)) or "none"
        raise UserError(
            f"domain(s) {', '.join(missing)} not found in {source_root} (its folders: {found}); "
            "fix the dataset's `domains` or point it at the folder holding <domain>/<class>/"
        )
    counts: dict[str, dict[str, int]] = {}
    for domain in domains:
        per_class: dict[str, int] = {}
        for class_name in subfolder_names(source_root / domain):
            if classes is not None and class_name not in classes:
                continue
            class_dir = source_root / domain / class_name
            images = sorted(path for path in class_dir.iterdir() if is_image_file(path))
            for image in images:
                link_or_copy(image, raw_dir / domain / class_name / image.name)
            if images:
                per_class[class_name] = len(images)
        if not per_class:
            raise UserError(
                f"{source_root / domain}: no images in <class>/ sub-folders "
                f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))} files)"
            )
        counts[domain] = per_class
    return counts
