"""What each job leaves where DVC and Snakemake look, and whether it is still what the job left.

When a stage command finishes, `seal` records the size, modification time and sha256 of every
file of its job's outputs in `identities/<dataset>/sealed/<job>.json`. `damage` says whether the
outputs still match; it hashes only the files whose size or time moved, since `dvc checkout`,
`dvc commit` and `snakemake --touch` rewrite times, not content (the new times are then recorded).

DVC compares its outputs' content itself. Snakemake compares times and its own records, so an
output edited, truncated or deleted by hand went unnoticed ("Nothing to be done" with the
evaluations gone). At start-up it calls `remove_damaged` (workflow/rules/common.smk): the outputs
of a damaged job and of every job made from them are removed (their stored copies stay in the
result stores and DVC's cache), so the run, and a dry run, rebuild exactly those.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from align.atomic import write_json_atomically
from align.config import Params
from align.digests import file_digest
from align.identity import IDENTITIES_ROOT, Identities
from align.stages import EVAL_DIRNAME, STAGES, Job, grid_jobs
from align.store import remove_tree

log = logging.getLogger(__name__)

SNAKEMAKE_TIMESTAMP = ".snakemake_timestamp"

def sealed_file(job: Job, root: Path = IDENTITIES_ROOT) -> Path:
    return root / job.dataset / "sealed" / f"{job.name.replace('/', '_')}.json"


def job_outputs(params: Params, job: Job) -> list[Path]:
    """The files and folders `job` writes for the orchestrators, as its stage declares them."""
    return STAGES[job.stage].outputs(params, job)


def _files(path: Path, skip: str | None = None) -> Iterator[Path]:
    """Every file at or under `path` (the folder `skip` directly inside it left out), but the
    time stamp Snakemake adds to a finished folder output."""
    if path.is_file():
        yield path
        return
    for parent, folders, names in os.walk(path):
        if Path(parent) == path and skip in folders:
            folders.remove(skip)
        yield from (Path(parent, name) for name in names if name != SNAKEMAKE_TIMESTAMP)


def _output_files(params: Params, job: Job) -> list[Path]:
    skip = EVAL_DIRNAME if job.stage == "train" else None
    return sorted({file for output in job_outputs(params, job) for file in _files(output, skip)})


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def seal(params: Params, job: Job, root: Path = IDENTITIES_ROOT) -> Path:
    """Record what `job`'s outputs are now: called when the job has written them."""
    files = {str(path): [*_stat(path), file_digest(path)] for path in _output_files(params, job)}
    record = {"job": job.name, "at": _place(params, job), "files": files}
    return write_json_atomically(sealed_file(job, root), record)


def _place(params: Params, job: Job) -> str:
    """Where the job's outputs are: a record of another place (`data.root` changed) says
    nothing about the outputs here."""
    return str(job_outputs(params, job)[0])


def damage(params: Params, job: Job, root: Path = IDENTITIES_ROOT) -> str | None:
    """How `job`'s outputs differ from what it left (a file changed, missing or added), or None
    when they match or the job never sealed them (built before seals, or never run)."""
    record_path = sealed_file(job, root)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        sealed = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("at") != _place(params, job):
        return None
    present = {str(path): path for path in _output_files(params, job)}
    missing, added = sorted(set(sealed) - set(present)), sorted(set(present) - set(sealed))
    if missing:
        return f"{missing[0]} is missing"
    if added:
        return f"{added[0]} was added"
    moved = False
    for name, (size, mtime_ns, digest) in sealed.items():
        now = _stat(present[name])
        if now == [size, mtime_ns]:
            continue
        if now[0] != size or file_digest(present[name]) != digest:
            return f"{name} was changed"
        sealed[name] = [*now, digest]
        moved = True
    if moved:  # the same content at new times: record them, so the next check only stats
        write_json_atomically(record_path, {**record, "files": sealed})
    return None


def made_from(params: Params, jobs: list[Job]) -> list[Job]:
    """Every grid job that reads, directly or not, the output of one of `jobs`."""
    identities = Identities(params)
    readers: dict[Job, list[Job]] = defaultdict(list)
    for job in grid_jobs(params):
        for upstream in identities.reads(job)["inputs"]:
            readers[upstream].append(job)
    found: list[Job] = []
    pending = list(jobs)
    while pending:
        for reader in readers[pending.pop()]:
            if reader not in found:
                found.append(reader)
                pending.append(reader)
    return found


def remove_damaged(params: Params, root: Path = IDENTITIES_ROOT) -> list[str]:
    """Remove the outputs of every damaged grid job and of the jobs made from them, with their
    seals; returns one line per damaged job, saying what was found and what will be rebuilt."""
    damaged = {job: problem for job in grid_jobs(params) if (problem := damage(params, job, root))}
    lines = []
    for job, problem in damaged.items():
        lines.append(f"{job.name}: {problem} since the job wrote it; rebuilding it and the"
                     f" {len(made_from(params, [job]))} job(s) made from it")
    for job in [*damaged, *made_from(params, list(damaged))]:
        for output in job_outputs(params, job):
            if job.stage == "train" and output.is_dir():
                for path in _files(output, skip=EVAL_DIRNAME):
                    path.unlink()
            elif output.is_dir():
                remove_tree(output)
            else:
                output.unlink(missing_ok=True)
        sealed_file(job, root).unlink(missing_ok=True)
    return lines
