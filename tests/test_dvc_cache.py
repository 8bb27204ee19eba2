"""A stored file and DVC's cache object of the same bytes are one file (align/dvc_cache.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from align.dvc_cache import project_cache, share_with_dvc_cache
from align.store import Store, materialize


def stored(root: Path, content: bytes) -> Path:
    store = Store(root / "runs" / ".store")
    entry = store.build("key", lambda staging: (staging / "model.pt").write_bytes(content))
    return entry / "model.pt"


def cache_object(cache: Path, content: bytes) -> Path:
    md5 = hashlib.md5(content).hexdigest()
    return cache / md5[:2] / md5[2:]


def test_materializing_links_a_stored_file_into_the_projects_dvc_cache(tmp_path):
    (tmp_path / ".dvc").mkdir()
    content = os.urandom(4096)
    source = stored(tmp_path, content)
    named = materialize(source.parent, tmp_path / "runs" / "erm")
    cached = cache_object(tmp_path / ".dvc" / "cache" / "files" / "md5", content)
    # Where `dvc commit` looks for these bytes before copying them (DVC 3's layout).
    assert cached.stat().st_ino == source.stat().st_ino == (named / "model.pt").stat().st_ino
    assert (named / "model.pt").is_symlink()
    assert not list(cached.parent.glob(".*"))  # no partial link left behind


def test_a_copy_dvc_made_earlier_replaces_the_stored_file(tmp_path):
    # A project whose cache got its own copy (before this version, or `dvc pull`): the stored
    # file becomes a link to DVC's object, and the second copy goes.
    (tmp_path / ".dvc").mkdir()
    content = os.urandom(4096)
    source = stored(tmp_path, content)
    cached = cache_object(tmp_path / ".dvc" / "cache" / "files" / "md5", content)
    cached.parent.mkdir(parents=True)
    shutil.copyfile(source, cached)
    share_with_dvc_cache(source, cached.parent.parent)
    assert source.stat().st_ino == cached.stat().st_ino
    assert Store(tmp_path / "runs" / ".store").verified("key") is not None


def test_a_cache_object_with_other_bytes_is_left_to_dvc(tmp_path):
    content = os.urandom(4096)
    source = stored(tmp_path, content)
    cached = cache_object(tmp_path / "cache", content)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"damaged")
    share_with_dvc_cache(source, tmp_path / "cache")
    assert source.read_bytes() == content and source.stat().st_nlink == 1


def test_the_cache_folder_is_read_from_dvcs_config(tmp_path):
    dvc_dir = tmp_path / ".dvc"
    dvc_dir.mkdir()
    (tmp_path / "runs").mkdir()
    assert project_cache(tmp_path / "runs") == dvc_dir / "cache" / "files" / "md5"
    (dvc_dir / "config").write_text('[core]\n    remote = local\n[cache]\n    dir = ../../shared\n'
                                    "['remote \"local\"']\n    url = ../x\n")
    assert project_cache(tmp_path / "runs") == dvc_dir / "../../shared" / "files" / "md5"
    (dvc_dir / "config.local").write_text("[cache]\n    dir = /big/disk/cache\n")
    assert project_cache(tmp_path / "runs") == Path("/big/disk/cache/files/md5")


def test_outside_a_dvc_project_nothing_is_shared(tmp_path):
    if project_cache(tmp_path) is not None:
        pytest.skip(f"{tmp_path} is inside a DVC project")
    source = stored(tmp_path, b"weights")
    named = materialize(source.parent, tmp_path / "runs" / "erm")
    assert (named / "model.pt").read_bytes() == b"weights" and source.stat().st_nlink == 1
