"""The embedded default (params.yaml) and the paper's presets (configs/) are what README says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from align.config import load_params
from align.methods.base import METHODS, resolve_config
from align.models.classifier import create_classifier
from align.report.verdict import POSITIVE_CONTROL

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "configs").glob("paper_*.yaml"))


def method_config(params, name: str):
    """`name`'s settings on the params' dataset, per-dataset overrides applied."""
    raw = getattr(params.methods, name).model_dump(mode="json")
    return resolve_config(name, raw, params.dataset)


def test_the_default_grid_trains_every_method_that_needs_nothing_from_outside():
    params = load_params(ROOT / "params.yaml")
    # m_sam needs a SAM checkpoint (sam.checkpoint), which cannot be shipped or downloaded.
    assert params.sam.checkpoint is None
    assert sorted(params.grid.methods) == sorted(set(METHODS.names()) - {"m_sam"})
    # The verdict's unit is a trained model (train domain, seed): at least 6, so that the
    # positive control (an oracle against ERM, both configured) can be decided.
    assert len(params.grid.seeds) * len(params.grid.domains) >= 6
    assert set(POSITIVE_CONTROL) <= set(params.grid.methods)
    # Every run is tested on every domain of the dataset.
    assert len(params.dataset_domains()) == 4


def test_the_default_benchmark_has_a_shortcut_with_its_own_place():
    params = load_params(ROOT / "params.yaml")
    synthetic = params.datasets.synthetic
    assert params.dataset == "synthetic" and synthetic.shortcut == "decoy"
    # The decoy's corner is one cell of the default's Grad-CAM grid (4x4 at 64 px).
    assert synthetic.decoy_cell * synthetic.image_size == synthetic.image_size / 4


def test_the_default_model_has_a_grad_cam_of_at_least_4x4():
    params = load_params(ROOT / "params.yaml")
    model = params.model
    classifier = create_classifier(5, model.pretrained, model.small_stem, model.layer4_stride)
    size = params.data.image_size
    features = classifier.features(torch.zeros(1, 3, size, size))
    assert min(features.shape[2:]) >= 4


def test_the_default_masker_trains_after_its_warm_up():
    params = load_params(ROOT / "params.yaml")
    for name in ("align", "m_gray", "m_gt"):
        config = method_config(params, name)
        assert params.train.steps - config.warmup_steps >= 100, name


@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: path.stem)
def test_a_paper_preset_is_the_papers_setting(preset):
    params = load_params(preset)
    assert params.dataset in ("vlcs", "terra_incognita")
    assert params.data.image_size == 224 and params.model.pretrained == "imagenet"
    classifier = create_classifier(5, "none", params.model.small_stem, params.model.layer4_stride)
    assert classifier.features(torch.zeros(1, 3, 224, 224)).shape[2:] == (7, 7)
    assert params.model.precision == "auto" and params.data.loader_workers is None
    assert params.sam.model_type == "vit_b" and params.sam.checkpoint is not None
    assert params.grid.seeds == [0, 1, 2]
    assert params.grid.domains == params.dataset_domains()
    guidance = 0.2 if params.dataset == "terra_incognita" else 0.1  # Sec. 5.1
    for name in ("align", "m_sam", "m_gray"):
        config = method_config(params, name)
        assert config.warmup_steps == 200 and config.lambda3 == config.lambda4 == guidance
    align = method_config(params, "align")
    assert (align.lambda1, align.lambda2) == (10, 1)
    assert sorted(params.grid.methods) == sorted(set(METHODS.names()) - {"m_gt"})


def test_there_is_a_preset_for_each_of_the_papers_datasets():
    assert [path.stem for path in PRESETS] == ["paper_terra_incognita", "paper_vlcs"]
