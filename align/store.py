"""Results kept by the key of their identity, DomainBed-style: `<root>/<key>/`, one per result.

An entry is built in a hidden staging folder `<root>/.<key>.building/` and appears under its key
only through one rename, after a manifest with the sha256 of every file has been written into it:
an entry that exists is complete, and a job killed at any moment either left a finished entry or
a staging folder to resume from. An entry's files are read-only, and are also hard-linked into
the project's DVC cache (`align.dvc_cache`), so that each is on disk once. They reach the folders
that DVC and Snakemake see (`materialize`) as symbolic links: Snakemake refuses to rerun a job
whose outputs its user cannot write (`ProtectedOutputException`), but not a link, and a write
through a link is refused (root excepted). Every reuse still checks the manifest, and a damaged
entry is removed so that its job computes it again. A file lock per key makes two processes that
would compute one result (`dre` and `wo_eg`, or two users) take turns: the second waits, then
finds the first one's entry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from align.atomic import write_json_atomically
from align.digests import file_digest
from align.dvc_cache import project_cache, share_with_dvc_cache
from align.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STORED_MODE = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
"""r--r--r--: sealed, and what DVC's cache objects are; others may read a shared store."""
WAIT_NOTICE_S = 5.0
"""How long to wait for another process's lock before saying so in the log."""


class Store:
    """A folder of finished results keyed by identity (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def staging(self, key: str) -> Path:
        """Where the result of `key` is built (and a killed job's partial state waits)."""
        return self.root / f".{key}.building"

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the lock of `key` for the block; waits (and says so) while another holds it. A
        store folder this user cannot write is a UserError naming it."""
        lock = FileLock(self.root / f".{key}.lock")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=WAIT_NOTICE_S)
            except Timeout:
                log.info("waiting for another process working on %s", self.entry(key))
                lock.acquire()
        except OSError as error:
            raise UserError(
                f"{self.root}: cannot write the store here ({error.strerror or error}); make the"
                " folder writable for this user, or point the stage at another one"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def verified(self, key: str) -> Path | None:
        """The entry of `key` if it exists and every file matches its manifest; a damaged entry
        (a file changed, missing or unreadable) is removed, so that it is computed again."""
        entry = self.entry(key)
        if not entry.is_dir():
            return None
        problem = damage(entry)
        if problem is None:
            return entry
        log.warning("stored result %s is damaged (%s); removing it to compute it again",
                    entry, problem)
        remove_tree(entry)
        return None

    def build(
        self,
        key: str,
        build: Callable[[Path], None],
        *,
        resume: bool = False,
        transient: tuple[str, ...] = (),
    ) -> Path:
        """The entry of `key`: the stored one when it is whole, else made now by `build(staging)`
        and sealed (`finish`), all under the key's lock. The staging folder is emptied first,
        unless `resume` (a killed job's state, e.g. checkpoints, is picked up by `build`)."""
        with self.locked(key):
            entry = self.verified(key)
            if entry is not None:
                log.info("identical result found in %s, not computing it again", entry)
                return entry
            if not resume:
                self.clear_staging(key)
            self.staging(key).mkdir(parents=True, exist_ok=True)
            build(self.staging(key))
            return self.finish(key, transient=transient)

    def finish(self, key: str, transient: tuple[str, ...] = ()) -> Path:
        """Seal the staging folder of `key` into its entry, in one rename; files whose names are
        in `transient` (e.g. resume checkpoints) are left out of the manifest and deleted after."""
        staging, entry = self.staging(key), self.entry(key)
        files = sorted(
            path for path in staging.rglob("*")
            if path.is_file() and path.name not in transient and path.name != MANIFEST
        )
        manifest = {path.relative_to(staging).as_posix(): file_digest(path) for path in files}
        write_json_atomically(staging / MANIFEST, manifest)
        for path in [*files, staging / MANIFEST]:
            path.chmod(STORED_MODE)
        remove_tree(entry)  # a damaged entry removed by `verified` may have been re-created
        staging.rename(entry)
        for path in entry.rglob("*"):
            if path.name in transient:
                path.unlink()
        return entry

    def clear_staging(self, key: str) -> None:
        remove_tree(self.staging(key))


def manifest_of(entry: Path) -> dict[str, str]:
    return json.loads((entry / MANIFEST).read_text(encoding="utf-8"))


def damage(entry: Path) -> str | None:
    """Why `entry` does not match its manifest, or None when it does."""
    try:
        manifest = manifest_of(entry)
    except (OSError, ValueError):
        return f"{MANIFEST} missing or unreadable"
    for name, digest in manifest.items():
        path = entry / name
        if not path.is_file():
            return f"{name} is missing"
        if file_digest(path) != digest:
            return f"{name} was changed after it was stored"
    return None


def remove_tree(path: Path) -> None:
    """Delete a folder even if its files are read-only (as earlier versions stored them)."""
    if not path.exists():
        return

    def make_writable(function: Callable, name: str, _error: object) -> None:
        os.chmod(name, stat.S_IWUSR | stat.S_IRUSR)
        function(name)

    shutil.rmtree(path, onerror=make_writable)


def materialize(
    entry: Path,
    named: Path,
    rewrite: Callable[[str, bytes], bytes] | None = None,
    skip: tuple[str, ...] = (),
) -> Path:
    """Replace the folder `named` by the files of the stored `entry` (its manifest's files but
    those named in `skip`).

    Files are relative symbolic links to the entry's (writable copies where the file system has
    no links), or written through `rewrite(name, bytes)` when given (e.g. to stamp a requested
    name into JSON). The new folder appears by one rename; a link is dated when it is made, and
    Snakemake dates an output link by itself, so it sees them as newer than their inputs.
    """
    staging = named.with_name(f".{named.name}.partial")
    remove_tree(staging)
    cache = project_cache(named.resolve().parent)
    for name in manifest_of(entry):
        if name in skip:
            continue
        source, target = entry / name, staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if rewrite is not None:
            target.write_bytes(rewrite(name, source.read_bytes()))
            continue
        if cache is not None:
            share_with_dvc_cache(source, cache)
        try:  # relative: staging and `named` are siblings, and the project may move
            target.symlink_to(os.path.relpath(source.resolve(), target.parent.resolve()))
        except OSError:
            shutil.copyfile(source, target)
    remove_tree(named)
    staging.rename(named)
    return named
