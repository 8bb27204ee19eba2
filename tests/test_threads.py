"""A job's thread budget (`align --threads N` or ALIGN_THREADS) sets torch's threads and sizes the
DataLoader; each case runs in its own process, as a job does, so this one's threads stay put."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from align.cli import main

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

# Runs the CLI, then reports torch's threads and the DataLoader workers the loader would use:
# on a GPU with the default `data.loader_workers` (null), on the CPU, and with it set to 2.
JOB = """
import sys, torch
from align.cli import main
from align.threads import loader_workers
assert main(sys.argv[1:]) == 0
print(torch.get_num_threads(), loader_workers(None, cuda=True), loader_workers(None, cuda=False),
      loader_workers(2, cuda=True))
"""


def run_job(*argv: str, env: dict[str, str] | None = None) -> tuple[int, ...]:
    environment = {k: v for k, v in os.environ.items() if k != "ALIGN_THREADS"} | (env or {})
    result = subprocess.run(
        [sys.executable, "-c", JOB, "--params", str(PARAMS), *argv, "check-params"],
        capture_output=True, text=True, env=environment, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return tuple(int(n) for n in result.stdout.splitlines()[-1].split())


@pytest.mark.parametrize(
    ("argv", "env"),
    [(["--threads", "3"], None), ([], {"ALIGN_THREADS": "3"}),
     (["--threads", "3"], {"ALIGN_THREADS": "7"})],  # the command line wins
    ids=["flag", "env", "flag-over-env"],
)
def test_the_job_budget_sets_torch_threads_and_loader_workers(argv, env):
    torch_threads, gpu_workers, cpu_workers, configured = run_job(*argv, env=env)
    assert torch_threads == 3
    assert gpu_workers == 2  # all threads but the main process's
    assert cpu_workers == 0  # on the CPU the main process's threads compute
    assert configured == 2  # an explicit data.loader_workers is kept


def test_a_bad_budget_is_one_line_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("ALIGN_THREADS", "many")
    assert main(["--params", str(PARAMS), "check-params"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "align check-params: error: ALIGN_THREADS='many': expected a whole number of threads, "
        "at least 1"
    ]
