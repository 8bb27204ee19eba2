"""The evaluate stage: one JSON per (run, target domain), numbers that match direct computation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import with_sections
from sklearn.metrics import accuracy_score

from align.cli import main
from align.data.loader import make_loader
from align.evaluate import blur_background, eval_path, evaluate_run, masker_blur_accuracy
from align.models.trained import load_trained
from align.runs import RunSpec
from align.train import train_run


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
    assert set(own["mask_quality"]) == {"gradcam", "masker"}
    assert set(own["mask_quality"]["gradcam"]) >= {"iou", "dice", "pointing_game"}
    assert set(own["background_blur"]) == {"none", "gt"}
    assert own["background_blur"]["none"] == pytest.approx(own["accuracy"])
    assert "sam-masks" in own["unavailable"]["sam"]  # no SAM masks: says how to make them
    erm = read(runs_root, specs["erm"], "gradient")
    assert "masker" not in erm["mask_quality"] and "masker" in erm["unavailable"]


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
