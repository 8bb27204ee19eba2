"""What a result says it came from: inside `dvc exp run`, the experiment (its baseline commit and
its name, the variables DVC sets for every stage it runs), not the workspace's `<commit>-dirty`."""

from __future__ import annotations

import subprocess

import pytest
from conftest import TINY_SYNTHETIC, make_params

from align.provenance import PROJECT_ROOT, git_commit, provenance

# The names DVC 3 gives them (dvc/env.py; set by dvc/repo/experiments/queue/base.py for each
# stage of an experiment).
BASELINE, NAME = "DVC_EXP_BASELINE_REV", "DVC_EXP_NAME"


def head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_outside_an_experiment_the_commit_is_the_checkout(monkeypatch):
    monkeypatch.delenv(BASELINE, raising=False)
    monkeypatch.delenv(NAME, raising=False)
    assert git_commit().removesuffix("-dirty") == head()


def test_an_experiment_names_its_baseline_commit_and_itself(monkeypatch, tmp_path):
    baseline = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv(BASELINE, baseline)
    monkeypatch.setenv(NAME, "sooty-pear")
    # The experiment's own commit does not exist while its stages run; its name finds it after
    # (`dvc exp show`, `dvc exp apply sooty-pear`), and the baseline is where it started.
    assert git_commit() == f"{baseline} (dvc experiment sooty-pear)"
    stamp = provenance(make_params(tmp_path, **TINY_SYNTHETIC))
    assert stamp["git_commit"] == git_commit() and "-dirty" not in stamp["git_commit"]


@pytest.mark.parametrize("present", [BASELINE, NAME])
def test_half_an_experiment_is_not_one(monkeypatch, present):
    for name in (BASELINE, NAME):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(present, "x")
    assert git_commit().removesuffix("-dirty") == head()
