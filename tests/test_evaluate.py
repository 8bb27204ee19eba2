"""The evaluate stage: one JSON per (run, target domain), numbers that match direct computation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import with_sections
from sklearn.metrics import accuracy_score

from align.cli import main
from align.config import parse_params
from align.data.loader import make_loader
from align.data.registry import DATASETS
from align.device import autocast, computes_in_bf16
from align.errors import UserError
from align.evaluate import (
    blur_background,
    evaluate_on_domain,
    evaluate_run,
    masker_blur_accuracy,
)
from align.models.trained import load_trained
from align.runs import RunSpec, eval_path
from align.train import train_run

DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tmp_path_factory):
    """Two short runs (ERM and ALIGN) on `gradient`, evaluated on both domains."""
    runs_root = tmp_path_factory.mktemp("runs")
    params = with_sections(tiny_synthetic, train={"steps": 2, "eval_every": 2},
                           methods={"align": {"warmup_steps": 1}})
    specs = {m: RunSpec("synthetic", "gradient", m, 0) for m in ("erm", "align")}
    for spec in specs.values():
        train_run(params, spec, runs_root, show_progress=False)
        evaluate_run(params, spec, runs_root, show_progress=False)
    return params, runs_root, specs


def read(runs_root, spec, target):
    return json.loads(eval_path(spec.named_dir(runs_root), target).read_text())


def test_one_json_per_target_domain_with_id_only_measures(trained):
    params, runs_root, specs = trained
    own = read(runs_root, specs["align"], "gradient")
    other = read(runs_root, specs["align"], "noise")
    assert own["in_distribution"] and not other["in_distribution"]
    assert own["num_samples"] == other["num_samples"] == 24
    for result in (own, other):
        assert 0 <= result["accuracy"] <= 100 and result["auc"] is not None
        assert len(result["git_commit"]) >= 7 and len(result["identity_key"]) == 16
    assert own["sufficiency"] is not None and own["comprehensiveness"] is not None
    assert other["sufficiency"] is None and other["mask_quality"] == {}
    assert set(own["mask_quality"]) == {"gradcam", "masker", "uniform"}
    for source in own["mask_quality"].values():
        assert set(source) >= {"iou", "dice", "pointing_game", "inside", "outside", "spread",
                               "mean_value"}
    assert set(own["background_blur"]) == {"none", "gt"}
    assert own["background_blur"]["none"] == pytest.approx(own["accuracy"])
    assert "sam-masks" in own["unavailable"]["sam"]  # no SAM masks: says how to make them
    erm = read(runs_root, specs["erm"], "gradient")
    assert "masker" not in erm["mask_quality"] and "masker" in erm["unavailable"]
    # Where each map sits: in distribution only, every map and the fixed targets, shares in %.
    assert other["attention"] == {}
    assert set(own["attention"]) == {"gradcam", "masker", "uniform", "gt", "gray"}
    assert set(erm["attention"]) == {"gradcam", "uniform", "gt", "gray"}
    for shares in own["attention"].values():
        total = shares["object"] + shares["shortcut"] + shares["elsewhere"]
        assert total == pytest.approx(100) or shares["num_images"] == 0
    # The true mask is all on the object; the uniform map's shares are the regions' areas.
    assert own["attention"]["gt"]["object"] == pytest.approx(100)
    assert 0 < own["attention"]["uniform"]["shortcut"] < 15


def test_the_selected_step_is_the_one_stored_in_the_model(trained):
    _, runs_root, specs = trained
    for spec in specs.values():
        run_dir = spec.named_dir(runs_root)
        stored = load_trained(run_dir).step
        training = json.loads((run_dir / "metrics.json").read_text())
        assert training["selected_step"] == stored >= training["first_selectable_step"]
        for target in ("gradient", "noise"):
            assert read(runs_root, spec, target)["selected_step"] == stored


def test_masker_quality_matches_a_direct_computation_and_the_uniform_reference(trained):
    params, runs_root, specs = trained
    run = load_trained(specs["align"].named_dir(runs_root))
    spreads, means, inside, outside, areas = [], [], [], [], []
    for batch in make_loader(params, "synthetic", "gradient", "test", train=False, batch_size=7,
                             with_masks=True):
        # In the precision the evaluation uses (model.precision: bf16 autocast where native).
        with torch.no_grad(), autocast(DEVICE, computes_in_bf16(params.model.precision, DEVICE)):
            masks = run.masker(batch["image"]).float().numpy().reshape(len(batch["label"]), -1)
        objects = batch["mask"].numpy().reshape(len(masks), -1) >= 0.5
        spreads += list(np.std(masks, axis=1))
        means += list(masks.mean(1))
        inside += [m[o].mean() for m, o in zip(masks, objects, strict=True) if o.any()]
        outside += [m[~o].mean() for m, o in zip(masks, objects, strict=True) if o.any()]
        areas += [o.mean() for o in objects if o.any()]
    quality = read(runs_root, specs["align"], "gradient")["mask_quality"]
    masker, uniform = quality["masker"], quality["uniform"]
    assert masker["spread"] == pytest.approx(100 * np.mean(spreads), rel=1e-4)
    assert masker["mean_value"] == pytest.approx(100 * np.mean(means), rel=1e-4)
    assert masker["inside"] == pytest.approx(100 * np.mean(inside), rel=1e-4)
    assert masker["outside"] == pytest.approx(100 * np.mean(outside), rel=1e-4)
    # The all-ones map: no spread, no contrast, and an IoU equal to the object's area.
    assert uniform["spread"] == 0 and uniform["inside"] == uniform["outside"] == 100
    assert uniform["iou"] == pytest.approx(100 * np.mean(areas), rel=1e-5)


def test_without_ground_truth_the_masker_still_gets_its_spread(trained, monkeypatch):
    params, runs_root, specs = trained
    monkeypatch.setattr(DATASETS.get("synthetic"), "has_masks", False)
    run = load_trained(specs["align"].named_dir(runs_root))
    result = evaluate_on_domain(params, specs["align"], run, "gradient", show_progress=False)
    assert set(result["mask_quality"]) == {"gradcam", "masker"}
    assert set(result["mask_quality"]["masker"]) == {"spread", "mean_value"}
    own = read(runs_root, specs["align"], "gradient")["mask_quality"]["masker"]
    assert result["mask_quality"]["masker"]["spread"] == pytest.approx(own["spread"])
    assert "no ground-truth masks" in result["unavailable"]["mask_quality"]


def test_accuracy_matches_a_direct_computation(trained):
    params, runs_root, specs = trained
    run = load_trained(specs["erm"].named_dir(runs_root))
    predictions, labels = [], []
    for batch in make_loader(params, "synthetic", "noise", "test", train=False, batch_size=5):
        with torch.no_grad():
            predictions += run.classifier(batch["image"]).argmax(1).tolist()
        labels += batch["label"].tolist()
    expected = 100 * accuracy_score(labels, predictions)
    assert read(runs_root, specs["erm"], "noise")["accuracy"] == pytest.approx(expected)


def test_blurring_keeps_the_object_and_changes_the_background():
    x = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:24, 8:24] = 1
    blurred = blur_background(x, masks)
    assert torch.equal(blurred[:, :, 8:24, 8:24], x[:, :, 8:24, 8:24])
    assert not torch.allclose(blurred[:, :, :8], x[:, :, :8])


def test_masker_blur_accuracy_and_the_cli(trained, capsys):
    params, runs_root, specs = trained
    erm = load_trained(specs["erm"].named_dir(runs_root))
    align = load_trained(specs["align"].named_dir(runs_root))
    accuracy = masker_blur_accuracy(params, erm, align, "synthetic", "gradient")
    assert 0 <= accuracy <= 100
    code = main(["evaluate", "--domain", "tiles", "--method", "erm", "--seed", "0",
                 "--runs-root", str(runs_root)])
    assert code == 2
    assert "tiles" in capsys.readouterr().err


def test_a_damaged_shard_is_one_line_and_leaves_no_evaluation_that_looks_finished(
    trained, tmp_path, capsys
):
    params, runs_root, specs = trained
    shutil.copytree(params.data.root, tmp_path / "data")
    shutil.copytree(runs_root, tmp_path / "runs")
    raw = params.model_dump(mode="json")
    raw["data"]["root"] = str(tmp_path / "data")
    damaged = parse_params(raw)
    # The second target domain's shard: the first target's JSON would be written before it fails.
    shard = tmp_path / "data" / "shards" / "synthetic" / "noise" / "test-000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    run_dir = specs["erm"].named_dir(tmp_path / "runs")
    assert (run_dir / "eval" / "gradient.json").is_file()  # an earlier evaluation

    with pytest.raises(UserError, match="dvc repro shard") as caught:
        evaluate_run(damaged, specs["erm"], tmp_path / "runs", show_progress=False)
    assert str(caught.value).startswith(f"{shard}: ") and "\n" not in str(caught.value)
    assert not (run_dir / "eval").exists()
    assert not [path.name for path in run_dir.iterdir() if "eval" in path.name]


def test_evaluation_writes_the_eval_folder_as_a_whole(trained, tmp_path):
    params, runs_root, specs = trained
    shutil.copytree(runs_root, tmp_path / "runs")
    run_dir = specs["erm"].named_dir(tmp_path / "runs")
    (run_dir / "eval" / "retired_domain.json").write_text("{}")  # a domain no longer in the split
    written = evaluate_run(params, specs["erm"], tmp_path / "runs", show_progress=False)
    assert written == [eval_path(run_dir, domain) for domain in ("gradient", "noise")]
    assert sorted(path.name for path in (run_dir / "eval").iterdir()) == [
        "gradient.json", "noise.json"
    ]
    assert not [path.name for path in run_dir.iterdir() if path.name.startswith(".eval")]
