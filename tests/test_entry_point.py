"""The stages' command finds the project's `align` without an activated environment: `.venv/bin/dvc
repro` and `.venv/bin/snakemake` work as they are, and where no `align` can be found the stage
fails with one line saying what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_parity import PROJECT_FILES, REPO, tiny_params

BIN = Path(sys.executable).parent
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"
"""A PATH without the project's environment: what a shell has before `source .venv/bin/activate`."""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return tmp_path


def run_bare(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert shutil.which("align", path=BARE_PATH) is None, "an `align` outside the project's venv"
    env = {**os.environ, "PATH": BARE_PATH, "PYTHONPATH": str(cwd)}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_dvc_from_the_venv_runs_the_projects_align_without_activation(project: Path) -> None:
    (project / ".venv").symlink_to(BIN.parent, target_is_directory=True)  # the checkout's venv
    assert run_bare([str(BIN / "dvc"), "init", "--no-scm", "-q"], project).returncode == 0
    result = run_bare([str(BIN / "dvc"), "repro", "--single-item", "identify_data"], project)
    assert result.returncode == 0, result.stderr
    assert (project / "identities" / "synthetic" / "data" / "acquire.json").is_file()


def test_without_any_align_the_stage_says_in_one_line_what_to_do(project: Path) -> None:
    assert run_bare([str(BIN / "dvc"), "init", "--no-scm", "-q"], project).returncode == 0
    result = run_bare([str(BIN / "dvc"), "repro", "--single-item", "identify_data"], project)
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if line.startswith("align:")]
    assert len(said) == 1 and "source .venv/bin/activate" in said[0] and "make venv" in said[0]
    assert "command not found" not in result.stderr


def test_snakemake_runs_align_from_its_own_environment(project: Path) -> None:
    # No .venv in this copy and none on PATH: the interpreter running Snakemake has the project.
    command = [str(BIN / "snakemake"), "-c1", "data/raw/synthetic", "--quiet", "all"]
    result = run_bare(command, project)
    assert result.returncode == 0, result.stderr
    assert (project / "data" / "raw" / "synthetic" / "gradient").is_dir()


@pytest.mark.parametrize("override", ['methods={"align":{"lambda3":0.3}}', "grid={'seeds':[0,1]}",
                                      "dataset=vlcs"])
def test_a_snakemake_config_override_other_than_params_stops_in_one_line(
    project: Path, override: str
) -> None:
    # Jobs read params.yaml, so an override Snakemake alone sees did nothing ("Nothing to be done").
    result = run_bare([str(BIN / "snakemake"), "-n", "--config", override], project)
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if line.startswith("snakemake:")]
    assert len(said) == 1, result.stderr
    assert "--config params=" in said[0] and "params.yaml" in said[0]
    key = override.split("=")[0]
    assert f"--config {key}" in said[0]
