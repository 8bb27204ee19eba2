"""Outputs changed by hand after their job wrote them: Snakemake, which compares times and its own
records rather than content, rebuilds them and what was made from them (DVC compares content
itself). Each case ran into "Nothing to be done" before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_params
from test_parity import PROJECT_FILES, REPO, tiny_params

from align.identity import dataset_job, run_job
from align.outputs import damage, made_from, seal, sealed_file

BIN = Path(sys.executable).parent
RUN = Path("runs/synthetic/gradient/erm/seed0")


def snakemake(root: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(BIN / "snakemake"), "-c1", *arguments], cwd=root, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def rebuilt(root: Path, target: str) -> str:
    """Run Snakemake for `target`; returns what it said on stderr (the damage lines)."""
    return snakemake(root, target, "--quiet", "all").stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with one ERM run, built by Snakemake alone."""
    root = tmp_path_factory.mktemp("damage")
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    raw = tiny_params()
    raw["grid"]["methods"] = ["erm"]
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rebuilt(root, "all")
    return root


def test_a_truncated_model_is_trained_again(built: Path) -> None:
    model = built / RUN / "model.pt"
    size = model.stat().st_size
    with model.open("r+b") as file:  # a hard link into the store: the stored copy too
        file.truncate(size // 2)
    said = rebuilt(built, str(RUN / "eval"))
    assert f"train/synthetic/gradient/erm/seed0: {RUN}/model.pt was changed" in said
    assert model.stat().st_size == size
    assert (built / RUN / "eval" / "noise.json").is_file()


def test_a_hand_edited_shard_is_rebuilt_and_the_rest_found_in_the_store(built: Path) -> None:
    shard = sorted((built / "data" / "shards" / "synthetic").rglob("*.tar"))[0]
    original = shard.read_bytes()
    shard.unlink()  # an editor writes a new file
    shard.write_bytes(original[: len(original) // 2] + bytes(len(original) - len(original) // 2))
    model_inode = (built / RUN / "model.pt").stat().st_ino
    said = rebuilt(built, "results/ood_table.csv")
    assert "shard/synthetic: " in said and "was changed" in said
    assert shard.read_bytes() == original
    # The same shards again: the run is linked from the store, not trained again.
    assert (built / RUN / "model.pt").stat().st_ino == model_inode
    dry_run = snakemake(built, "-n", "all")
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr


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


def test_deleted_evaluations_are_rebuilt_but_not_while_another_snakemake_works_here(
    built: Path,
) -> None:
    shutil.rmtree(built / RUN / "eval")
    table = built / "results" / "ood_table.csv"
    # While another Snakemake works here its jobs' outputs may be half replaced: nothing is
    # removed (the table, made from the evaluations, stays).
    locks = built / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.output.lock").write_text(str(built / RUN / "eval"))
    try:
        result = snakemake(built, "-n", "results/ood_table.csv")
    finally:
        (locks / "0.output.lock").unlink()
    assert "another Snakemake holds this folder's locks" in result.stderr
    assert table.is_file()
    said = rebuilt(built, "results/ood_table.csv")
    assert f"evaluate/synthetic/gradient/erm/seed0: {RUN}/eval/gradient.json is missing" in said
    assert (built / RUN / "eval" / "noise.json").is_file() and table.is_file()
