"""Job identities: what each job reads, computed in one place (fast, in-process checks; the
orchestrators are checked against them in test_parity.py)."""

from __future__ import annotations

import pytest
import yaml
from conftest import TINY_SYNTHETIC, make_params, with_sections

from align.config import load_params
from align.data.sources.synthetic import Synthetic
from align.identity import (
    Identities,
    changed_jobs,
    code_closure,
    identity_file,
    write_identities,
)
from align.stages import Job, grid_jobs, run_job


@pytest.fixture
def params(tmp_path):
    return make_params(tmp_path / "data", **TINY_SYNTHETIC)


def train_key(params, method: str, domain: str = "gradient") -> str:
    return Identities(params).key(run_job("train", "synthetic", domain, method, 0))


def test_the_grid_lists_every_job_once_upstream_first(params):
    jobs = grid_jobs(params)
    assert [job.stage for job in jobs[:4]] == ["acquire", "split", "shard", "sam_masks"]
    assert jobs[-1] == Job("report", "synthetic")
    runs = [job for job in jobs if job.stage == "train"]
    assert len(runs) == len(params.grid.domains) * len(params.grid.methods) * len(params.grid.seeds)
    assert len(set(jobs)) == len(jobs)


def test_two_names_for_one_experiment_have_one_training_identity(params):
    unguided = with_sections(params, methods={"align": {"lambda3": 0.0}})
    identities = Identities(unguided)
    align, wo_eg = (identities.of(run_job("train", "synthetic", "noise", m, 0)) for m in
                    ("align", "wo_eg"))
    assert align == wo_eg
    assert align["params"]["method"] == "wo_eg"


def test_knobs_a_job_does_not_read_leave_its_identity_alone(params):
    for section, values in [
        ("train", {"checkpoint_every": 3}),
        ("sam", {"device": "cpu"}),
        ("data", {"loader_workers": 2}),
        ("evaluate", {"batch_size": 7, "chunk_size": 9}),
        ("methods", {"irm": {"penalty_weight": 5.0}}),  # irm is not in the grid
    ]:
        assert changed_jobs(params, with_sections(params, **{section: values})) == set(), section


def test_masker_knobs_change_only_the_runs_that_train_a_masker(params):
    for section, values in [("model", {"masker_width": 8}), ("train", {"masker_lr": 0.01})]:
        changed = changed_jobs(params, with_sections(params, **{section: values}))
        assert changed == {
            f"{stage}/synthetic/{domain}/align/seed0"
            for stage in ("train", "evaluate") for domain in params.grid.domains
        } | {"report/synthetic"}, section


def test_a_changed_dataset_default_changes_training_even_without_a_knob(params, monkeypatch):
    before = train_key(params, "erm")
    monkeypatch.setattr(Synthetic, "hue_jitter", 0.2)
    assert train_key(params, "erm") != before
    assert Identities(params).key(Job("acquire", "synthetic")) == Identities(
        with_sections(params, data={"hue_jitter": None})
    ).key(Job("acquire", "synthetic"))


def test_a_change_upstream_reaches_every_job_downstream(params):
    changed = changed_jobs(params, with_sections(params, data={"split_seed": 1}))
    assert "acquire/synthetic" not in changed
    downstream = {"split/synthetic", "shard/synthetic", "sam_masks/synthetic", "report/synthetic"}
    assert downstream <= changed
    assert all(f"{s}/synthetic/{d}/{m}/seed0" in changed for s in ("train", "evaluate")
               for d in params.grid.domains for m in params.grid.methods)


def test_a_job_runs_only_the_code_it_imports():
    erm = code_closure(["align.train", "align.methods.erm"])
    assert "align.methods.erm" in erm and "align.methods.align" not in erm
    assert not {"align.identity", "align.store", "align.report"} & set(erm)
    data = code_closure(["align.data.shards"])
    assert not [module for module in data if module.startswith("align.models")]
    assert "align.metrics.faithfulness" in code_closure(["align.evaluate"])


def test_identity_files_are_rewritten_only_when_their_content_changes(params, tmp_path):
    root = tmp_path / "identities"
    first = write_identities(params, root)
    assert len(first) == len(grid_jobs(params))
    assert write_identities(params, root) == []
    changed = write_identities(with_sections(params, methods={"align": {"lambda3": 0.3}}), root)
    assert {path.relative_to(root).as_posix() for path in changed} == {
        identity_file(job, root).relative_to(root).as_posix()
        for job in grid_jobs(params)
        if job.stage in ("train", "evaluate") and job.method == "align" or job.stage == "report"
    }


def test_explain_says_what_a_jobs_key_is_made_of(capsys) -> None:
    # "Why did this rerun?": the parameters, code files, library versions and upstream keys.
    from align.cli import main

    assert main(["identify", "--explain", "train/synthetic/gradient/erm/seed0"]) == 0
    explained = yaml.safe_load(capsys.readouterr().out)
    params = load_params("params.yaml")
    job = run_job("train", "synthetic", "gradient", "erm", 0)
    assert explained["job"] == "train/synthetic/gradient/erm/seed0"
    assert explained["key"] == Identities(params).key(job)
    assert explained["params"]["method"] == "erm" and explained["params"]["seed"] == 0
    assert "align.train" in explained["code"] and "torch" in explained["code"]
    assert set(explained["inputs"]) == {"shard/synthetic"}


def test_explain_of_an_unknown_job_is_one_line(capsys) -> None:
    from align.cli import main

    assert main(["identify", "--explain", "train/synthetic/nowhere/erm/seed0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not a job of the grid" in error
    assert "train/synthetic/" in error
