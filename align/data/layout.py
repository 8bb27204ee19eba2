"""DomainBed's folder layout `<root>/<domain>/<class>/<image>`, and filling a raw folder from it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from align.errors import UserError


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


def visible_files(folder: Path) -> list[Path]:
    """Every file under `folder`, in sub-folders too, sorted; hidden files and folders (names
    starting with a dot: `.git`, macOS `._x.jpg` forks) are not part of a dataset.

    Folder links are followed (a linked class folder is as much part of the dataset as a linked
    domain folder); a link back to a folder that contains it is a UserError naming it."""
    found = []
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        here = Path(parent)
        for name in subfolders:
            if (here / name).is_symlink() and _links_back(here / name, folder):
                raise UserError(
                    f"{here / name}: a link back to {(here / name).resolve()}, which contains it;"
                    " remove the link (the folder would be read forever)"
                )
        found += [here / name for name in sorted(names) if not name.startswith(".")]
    return found


def _links_back(link: Path, top: Path) -> bool:
    """Whether the folder `link` points at is one of the folders from `top` down to the link."""
    target = link.resolve()
    ancestor = link.parent
    while True:
        if ancestor.resolve() == target:
            return True
        if ancestor == top or ancestor == ancestor.parent:
            return False
        ancestor = ancestor.parent


def copy_domains(
    source_root: Path,
    raw_dir: Path,
    domains: list[str],
    classes: list[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Link every file of `<source_root>/<domain>/` into `<raw_dir>/<domain>/`, keeping its path.

    Only the class folders in `classes` are kept when given. Which files are usable images is the
    split stage's decision (it decodes each one, and lists every file it cannot use, or that is
    not inside a class folder, with the reason in its report), so nothing is dropped here
    unseen. Returns the file count per domain and class (sub-folders included). A missing domain,
    or one without files in class folders, is a UserError.
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
        for path in visible_files(source_root / domain):
            relpath = path.relative_to(source_root / domain)
            in_class = len(relpath.parts) > 1
            if in_class and classes is not None and relpath.parts[0] not in classes:
                continue
            link_or_copy(path, raw_dir / domain / relpath)
            if in_class:
                per_class[relpath.parts[0]] = per_class.get(relpath.parts[0], 0) + 1
        if not per_class:
            raise UserError(f"{source_root / domain}: no files in <class>/ sub-folders")
        counts[domain] = per_class
    return counts
