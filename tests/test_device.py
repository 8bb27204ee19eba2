"""GPU placement: jobs running at once each get a GPU of their own, through real file locks held by
real processes (the GPUs themselves are only names here: claiming needs no CUDA)."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

import pytest

from align.device import gpu_lock_dir, visible_gpu_ids

# A job: claims one of the GPUs named in argv[2], forks a child that exits at once (as DataLoader
# workers do: that must not give the GPU back), says which GPU it has, and holds it until its stdin
# closes.
JOB = """
import os, sys
from pathlib import Path
from align.device import claim_gpu
print("started", flush=True)
index, lock = claim_gpu(sys.argv[2].split(","), Path(sys.argv[1]), poll_seconds=0.05)
child = os.fork()
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
print(index, flush=True)
sys.stdin.read()
"""


def start_job(lock_dir: Path, gpus: list[str]) -> subprocess.Popen:
    # Unbuffered: readline() then reads byte by byte, so select() sees every line not yet read.
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, str(lock_dir), ",".join(gpus)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
    )
    assert job.stdout.readline().strip() == b"started"
    return job


def claimed(job: subprocess.Popen, timeout: float) -> int | None:
    """The GPU index `job` printed within `timeout` seconds, None if it printed nothing."""
    ready, _, _ = select.select([job.stdout], [], [], timeout)
    return int(job.stdout.readline()) if ready else None


def test_concurrent_jobs_get_different_gpus_and_a_third_waits_for_one_to_free(tmp_path):
    gpus = ["0", "1"]
    jobs = [start_job(tmp_path, gpus), start_job(tmp_path, gpus)]
    try:
        first, second = (claimed(job, timeout=30) for job in jobs)
        assert {first, second} == {0, 1}
        jobs.append(start_job(tmp_path, gpus))
        assert claimed(jobs[2], timeout=1.0) is None, "a third job took a GPU that was in use"
        jobs[0].stdin.close()  # the first job exits: the OS drops its lock
        assert jobs[0].wait(timeout=30) == 0
        assert claimed(jobs[2], timeout=30) == first
    finally:
        for job in jobs:
            job.kill()
            job.wait()


def test_a_gpu_is_named_by_its_cuda_visible_devices_entry(monkeypatch):
    # Two jobs that see physical GPU 3 as cuda:1 and as cuda:0 must contend for one lock.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpu_ids(2) == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert visible_gpu_ids(1) == ["3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpu_ids(2) == ["0", "1"]


@pytest.mark.parametrize("job_id", [None, "4242"])
def test_locks_are_per_slurm_allocation(monkeypatch, tmp_path, job_id):
    # SLURM renumbers each allocation's GPUs from 0: two allocations' "0" are different GPUs.
    monkeypatch.setenv("ALIGN_GPU_LOCK_DIR", str(tmp_path))
    if job_id is None:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
        assert gpu_lock_dir() == tmp_path
    else:
        monkeypatch.setenv("SLURM_JOB_ID", job_id)
        assert gpu_lock_dir() == tmp_path / "slurm-4242"
