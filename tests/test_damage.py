"""Seals of what a job left (align/outputs.py). The rebuilds they drive under Snakemake are tried
on the parity project, at the end of tests/test_parity.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import make_params

from align.outputs import damage, made_from, seal, sealed_file
from align.stages import dataset_job, run_job


def test_new_times_on_the_same_content_are_not_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = make_params(Path("data"))
    job = dataset_job("split", "synthetic")
    for path in (Path("data/splits/synthetic.json"), Path("data/splits/synthetic.report.json")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    seal(params, job)
    assert damage(params, job) is None
    split_file = Path("data/splits/synthetic.json")
    os.utime(split_file, ns=(1, 1))  # `snakemake --touch`, `dvc checkout`
    assert damage(params, job) is None
    recorded = json.loads(sealed_file(job).read_text())["files"][str(split_file)]
    assert recorded[:2] == [3, 1]  # the new time is recorded: the next check only stats
    split_file.write_text("{\"edited\": 1}\n")
    assert damage(params, job) == "data/splits/synthetic.json was changed"
    split_file.unlink()
    assert damage(params, job) == "data/splits/synthetic.json is missing"


def test_what_is_made_from_a_job_follows_the_identities() -> None:
    params = make_params(Path("data"), grid={"methods": ["erm"], "domains": ["gradient"],
                                             "seeds": [0]})
    names = {job.name for job in made_from(params, [dataset_job("shard", "synthetic")])}
    assert names == {"sam_masks/synthetic", "train/synthetic/gradient/erm/seed0",
                     "evaluate/synthetic/gradient/erm/seed0", "report/synthetic"}
    train = run_job("train", "synthetic", "gradient", "erm", 0)
    assert {job.name for job in made_from(params, [train])} == {
        "evaluate/synthetic/gradient/erm/seed0", "report/synthetic"}


def test_a_seal_of_outputs_at_another_place_says_nothing_about_these(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `data.root` changed: the outputs at the new root were never made, not damaged (the probe
    # of test_parity once saw every run removed after such a change).
    monkeypatch.chdir(tmp_path)
    job = dataset_job("shard", "synthetic")
    (tmp_path / "data" / "shards" / "synthetic").mkdir(parents=True)
    (tmp_path / "data" / "shards" / "synthetic" / "index.json").write_text("{}\n")
    seal(make_params(Path("data")), job)
    assert damage(make_params(Path("elsewhere")), job) is None
    assert damage(make_params(Path("data")), job) is None
