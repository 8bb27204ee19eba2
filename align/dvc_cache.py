"""One file on disk for a stored result, its workspace name and DVC's cache.

A result store's file (`align.store`) is hard-linked into the DVC cache of the project around it,
where DVC 3 would put the same bytes (`<cache>/files/md5/<md5[:2]>/<md5[2:]>`). When DVC then
records the output (`dvc commit`, or the commit that `dvc repro` makes after a stage), it finds
the object already there and copies nothing; with `cache.type: reflink,symlink` (.dvc/config) the
workspace name becomes a link to it. So a trained model takes its size once, where DVC alone
would have copied it into its cache.

Nothing here is needed for correctness: where no DVC project is found, the cache is on another
file system, or this user cannot write it, the file is left alone and DVC copies it as usual.
"""

from __future__ import annotations

import configparser
import hashlib
import logging
import os
from pathlib import Path

from align.atomic import atomic_path
from align.errors import UserError

log = logging.getLogger(__name__)


def md5_of(path: Path) -> str:
    """The md5 of a file's bytes, read in chunks: DVC 3's name for it in its cache. Here, not in
    align.digests, which every job's code identity includes: this is bookkeeping."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def project_cache(start: Path) -> Path | None:
    """The folder of DVC's file objects for the DVC project containing `start` (its `cache.dir`
    from .dvc/config.local or .dvc/config, else .dvc/cache), or None outside one."""
    for folder in [start, *start.parents]:
        dvc_dir = folder / ".dvc"
        if dvc_dir.is_dir():
            return _cache_dir(dvc_dir) / "files" / "md5"
    return None


def _cache_dir(dvc_dir: Path) -> Path:
    for name in ("config.local", "config"):
        config = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            config.read(dvc_dir / name, encoding="utf-8")
        except configparser.Error:  # DVC's own format is a superset; its cache is then the default
            continue
        cache_dir = config.get("cache", "dir", fallback=None)
        if cache_dir:  # relative paths are relative to .dvc/, as DVC reads them
            return dvc_dir / cache_dir
    return dvc_dir / "cache"


def share_with_dvc_cache(path: Path, cache: Path) -> None:
    """Make `path` (a sealed, read-only stored file) and DVC's cache object of its bytes one
    file: link it into the cache where the object is missing, or replace it by a link to the
    object where DVC made its own copy earlier. A file that already has another name is taken
    to be shared (stores link their files nowhere else)."""
    try:
        if path.stat().st_nlink > 1:
            return
        md5 = md5_of(path)
        cached = cache / md5[:2] / md5[2:]
        if cached.exists():
            if md5_of(cached) == md5:  # a damaged cache object is DVC's to notice, not ours
                _replace_by_link(cached, path)
            return
        _replace_by_link(path, cached)
    except (OSError, UserError) as error:  # another file system, a cache this user cannot write
        log.debug("%s: not shared with DVC's cache %s (%s)", path, cache, error)


def _replace_by_link(source: Path, target: Path) -> None:
    """`target` becomes a hard link of `source`, in one rename."""
    with atomic_path(target) as partial:
        os.link(source, partial)
