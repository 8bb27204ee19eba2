"""How the orchestrators' command lines reach `align`: where no `align` can be found, a stage fails
with one line saying what to do (that both find the project's own without an activated
environment is tried by tests/test_parity.py, whose project runs with such a PATH); Snakemake
overrides it does not read are refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_parity import BARE_PATH, copy_project

BIN = Path(sys.executable).parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


def run_bare(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert shutil.which("align", path=BARE_PATH) is None, "an `align` outside the project's venv"
    env = {**os.environ, "PATH": BARE_PATH, "PYTHONPATH": str(cwd)}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_without_any_align_the_stage_says_in_one_line_what_to_do(project: Path) -> None:
    assert run_bare([str(BIN / "dvc"), "init", "--no-scm", "-q"], project).returncode == 0
    result = run_bare([str(BIN / "dvc"), "repro", "--single-item", "identify_data"], project)
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if line.startswith("align:")]
    assert len(said) == 1 and "source .venv/bin/activate" in said[0] and "make venv" in said[0]
    assert "command not found" not in result.stderr


def test_a_snakemake_config_override_other_than_params_stops_in_one_line(project: Path) -> None:
    # Jobs read params.yaml, so an override Snakemake alone sees did nothing ("Nothing to be done").
    override = 'methods={"align":{"lambda3":0.3}}'
    result = run_bare([str(BIN / "snakemake"), "-n", "--config", override], project)
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if line.startswith("snakemake:")]
    assert len(said) == 1, result.stderr
    assert "--config params=" in said[0] and "params.yaml" in said[0]
    assert "--config methods=" in said[0]


@pytest.mark.parametrize("arguments", [["--help"], ["train", "--help"]])
def test_help_imports_neither_torch_nor_the_parameters(arguments: list[str]) -> None:
    # Importing torch (through the parameters, which register every method) took `align --help`
    # about 9 s; without it the help is immediate.
    code = (
        "import sys\nfrom align.cli import main\n"
        f"try:\n    main({arguments!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'align.config') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert "usage: align" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
