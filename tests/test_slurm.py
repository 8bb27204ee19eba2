"""The SLURM profile on a real cluster: the tiny grid run through `--workflow-profile
workflow/profiles/slurm` gives byte for byte the evaluations, tables and figures of a local
`snakemake` run, even though SLURM requeues a training job (as a preemption does) in the middle.

CI starts a one-node cluster first (.ci/slurm-up); elsewhere the test runs when `sinfo` answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SYNTHETIC, make_params

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 900


def slurm_reachable() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not slurm_reachable(),
        reason="no SLURM cluster reachable (`sinfo` failed); CI starts one with .ci/slurm-up",
    ),
]


def make_workdir(path: Path) -> Path:
    """A folder with the tiniest grid's params.yaml: ERM on one domain, seed 0, 24 steps. Each
    SLURM job costs tens of seconds however small it is, so the grid is one run: the workflow still
    takes every stage (data, SAM masks, train + evaluate, report) through the profile."""
    raw = make_params(Path("data"), **TINY_SYNTHETIC).model_dump(mode="json")
    raw["grid"].update(methods=["erm"], domains=["gradient"])
    # A checkpoint every 2 of 24 steps: the requeue below lands well before the run ends. How often
    # checkpoints are written changes no result.
    raw["train"].update(steps=24, checkpoint_every=2)
    path.mkdir()
    (path / "params.yaml").write_text(yaml.safe_dump(raw))
    return path


def start_snakemake(workdir: Path, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), *options]
    log = (workdir / "snakemake.out").open("w")
    # The two runs share the CI machine's 2 cores: OpenMP threads that spin while they wait would
    # make each run many times slower. (How threads wait changes no result.) sbatch passes the
    # environment on to the SLURM jobs.
    env = os.environ | {"OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)


def finish(process: subprocess.Popen, workdir: Path) -> None:
    process.wait(timeout=TIMEOUT)
    output = (workdir / "snakemake.out").read_text()
    assert process.returncode == 0, output[-4000:]


def squeue(*options: str) -> list[str]:
    result = subprocess.run(["squeue", "-h", "--states=all", *options], capture_output=True,
                            text=True, check=True)
    return result.stdout.split("\n")[:-1]


def requeue_first_training(workdir: Path, process: subprocess.Popen) -> str:
    """Once a training job has written its first checkpoint, SLURM requeues it, as it does a
    preempted job, and lets it start again at once. Returns its job id."""
    deadline = time.monotonic() + TIMEOUT
    while not list((workdir / "runs" / ".store").glob("*/checkpoint.pt")):
        assert process.poll() is None, "snakemake ended before any training checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # One GPU on the node: the only job of ours running now is that training job.
    running = [line.split()[0] for line in squeue("-t", "RUNNING", "-o", "%i %Z")
               if line.split()[1] == str(workdir)]
    assert len(running) == 1, running
    job = running[0]
    subprocess.run(["scontrol", "requeue", job], check=True)
    # SLURM holds a requeued job back for two minutes before it may start again.
    while squeue("-j", job, "-o", "%T") != ["PENDING"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    return job


def produced(workdir: Path) -> dict[str, bytes]:
    """Every evaluation, table, figure and metrics file of a run of the workflow."""
    files = [*(workdir / "results").rglob("*"), *(workdir / "runs").glob("*/*/*/*/eval/*.json")]
    return {str(f.relative_to(workdir)): f.read_bytes() for f in files if f.is_file()}


def test_the_slurm_profile_reproduces_a_local_run_through_a_requeue(tmp_path):
    local_dir = make_workdir(tmp_path / "local")
    slurm_dir = make_workdir(tmp_path / "slurm")
    # Both at once: the SLURM run spends much of its time waiting on the scheduler. Threads agree:
    # 2 cores here, and each SLURM job runs with the cores its node has (`--cores all`).
    local = start_snakemake(local_dir, "--cores", "2")
    slurm = start_snakemake(
        slurm_dir, "--workflow-profile", str(REPO / "workflow" / "profiles" / "slurm"),
        # No accounting database on the CI cluster. The plugin first asks after a job this many
        # seconds after submitting it, then 10 s later each time; the jobs here take 10-40 s.
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "20",
    )
    try:
        requeued = requeue_first_training(slurm_dir, slurm)
        finish(slurm, slurm_dir)
        finish(local, local_dir)
    finally:
        for process in (slurm, local):  # on a failure: snakemake cancels its SLURM jobs
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)

    expected, got = produced(local_dir), produced(slurm_dir)
    assert any(name.endswith("eval/noise.json") for name in expected)  # out of distribution
    assert "results/ood_table.csv" in expected
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []

    job = subprocess.run(["scontrol", "show", "job", requeued], capture_output=True, text=True,
                         check=True).stdout
    assert "Restarts=1" in job and "Requeue=1" in job
    assert "TresPerJob=gres:gpu:1" in job and "NumCPUs=8" in job  # the profile's requests
    (log,) = (slurm_dir / "logs" / "slurm").rglob(f"{requeued}.log")
    assert "resuming RunSpec" in log.read_text()  # training went on from its checkpoint
