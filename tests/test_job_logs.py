"""Under DVC and Snakemake (`--no-progress`, no bar) a job says how far it is, and every stage
command at the pipeline's places keeps its own log file, `logs/<job>.log`, failed or not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from align.stages import log_file, run_job


def align_command(project: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "align.cli", *arguments], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_job_logs_its_progress_and_keeps_a_log_file_failed_or_not(tiny_synthetic, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_synthetic.model_dump(mode="json")))
    trained = align_command(tmp_path, "train", "--domain", "gradient", "--method", "erm",
                            "--seed", "0", "--no-progress")
    assert trained.returncode == 0, trained.stderr
    job = run_job("train", "synthetic", "gradient", "erm", 0)
    # One line per validation (every 4 of 12 steps): the job, the step, the losses, time left.
    progress = [line for line in trained.stderr.splitlines() if f"{job.name}: step" in line]
    assert [line.split(": step ")[1].split(",")[0] for line in progress] == ["4/12", "8/12",
                                                                              "12/12"]
    assert "ce " in progress[0] and "val accuracy" in progress[0] and "s left" in progress[0]
    logged = (tmp_path / log_file(job)).read_text()
    assert all(line in logged for line in progress) and f"{job.name}: done" in logged

    # A job that fails keeps its story in its file as well as its one line on the screen.
    failed = align_command(tmp_path, "evaluate", "--domain", "gradient", "--method", "align",
                           "--seed", "0", "--no-progress")
    assert failed.returncode == 2
    (error,) = failed.stderr.strip().splitlines()[-1:]
    assert error.startswith("align evaluate: error: ")
    evaluate_log = (tmp_path / log_file(run_job("evaluate", "synthetic", "gradient", "align", 0)))
    assert "failed: " + error.removeprefix("align evaluate: error: ") in evaluate_log.read_text()
