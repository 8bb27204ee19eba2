"""How many CPU threads a job uses: torch's own threads and the DataLoader's worker processes.

An orchestrator gives each job some CPUs (Snakemake's `threads:`, which the SLURM profile turns into
`--cpus-per-task`) and says so with `align --threads N`; where the command line is fixed (a DVC
queue), `ALIGN_THREADS=N` says the same. Without either, torch keeps its default (every core), which
oversubscribes the machine as soon as two jobs share it.
"""

from __future__ import annotations

import os

from align.errors import UserError

THREADS_ENV = "ALIGN_THREADS"

_job_threads: int | None = None
"""The budget `use_threads` set for this process, if any."""


def threads_from_env() -> int | None:
    """ALIGN_THREADS as a number of threads, None when unset."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{THREADS_ENV}={value!r}: expected a whole number of threads, at least 1")
    return int(value)


def use_threads(threads: int | None) -> None:
    """Make `threads` this process's CPU budget: torch computes with that many threads and
    `loader_workers` sizes the DataLoader from it. None leaves torch's default."""
    global _job_threads
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads {threads}: expected at least 1")
    _job_threads = threads
    import torch  # here, not above: `align --help` stays fast (torch takes seconds to import)

    torch.set_num_threads(threads)


def loader_workers(configured: int | None, cuda: bool) -> int:
    """DataLoader workers: `data.loader_workers` when it is set; else, on a GPU, all of the job's
    threads but one (the main process only feeds the GPU while workers decode and augment), and on
    the CPU none (the main process's torch threads do the computing; workers would take their
    cores)."""
    if configured is not None:
        return configured
    if not cuda:
        return 0
    threads = _job_threads or len(os.sched_getaffinity(0))
    return max(threads - 1, 0)
