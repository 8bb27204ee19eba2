"""Every registered method: finite loss terms, training that lowers them, gradient routing, and the
checks particular to each, against its authors' definition where one exists (IRM's penalty and its
schedule, mixup's labels, SGT's saliency, mask and KL, SGDrop at evaluation, DRE's terms, the
configurations that are w/o EG, the fixed-mask targets and where their masks come from)."""

from __future__ import annotations

import copy
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import webdataset as wds
from captum.attr import LayerGradCam, Saliency
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from align.config import Params, parse_params
from align.data.transforms import normalize
from align.errors import UserError
from align.explain import gradcam
from align.masks.layout import STATUS_NAME
from align.methods.base import METHODS, Models, resolve_config
from align.methods.dre import dre_explanation
from align.methods.irm import irm_penalty, random_halves
from align.methods.m_gray import grayscale
from align.methods.regularizers import beta_sample, same_class_partners
from align.methods.sgdrop import salient_feature_keep
from align.methods.sgt import mask_lowest_saliency, pixel_saliency
from align.models.classifier import create_classifier
from align.models.masker import Masker
from align.runs import RunSpec, run_identity, run_key
from align.train import Trainer, mask_shards_root, to_device, train_run, training_phase

PAST_WARMUP = 10_000
"""A step after every method's warm-up and IRM's annealing."""


def make_method(name: str, **overrides):
    cls = METHODS.get(name)
    defaults = cls.Config().model_dump()
    no_warmup = {"warmup_steps": 0} if "warmup_steps" in defaults else {}
    config = cls.Config.model_validate({**defaults, **no_warmup, **overrides})
    return cls(config, torch.Generator().manual_seed(0), total_steps=2 * PAST_WARMUP)


def tiny_models(method) -> Models:
    torch.manual_seed(0)
    classifier = create_classifier(3)
    return Models(classifier, Masker(width=4) if method.uses_masker else None)


@pytest.fixture
def batch() -> dict:
    generator = torch.Generator().manual_seed(1)
    return {
        "image": normalize(torch.rand(8, 3, 32, 32, generator=generator)),
        "label": torch.tensor([0, 0, 0, 1, 1, 1, 2, 2]),
        "mask": torch.rand(8, 1, 32, 32, generator=generator),
        "key": [str(i) for i in range(8)],
    }


def phase_losses(method, models, batch, phase, step=PAST_WARMUP):
    with training_phase(models, phase):
        return method.losses(phase, batch, models, step)


def total_loss_at_fixed_draws(method, models, batch, state) -> float:
    """The summed loss of every phase with the generator at `state`, so draws are the same."""
    method.generator.set_state(state)
    total = 0.0
    for phase in method.phases(PAST_WARMUP):
        total += sum(v.item() for v in phase_losses(method, models, batch, phase).values())
    return total


def train_steps(
    method, models, batch, steps: int, first_step: int = PAST_WARMUP, draws=None
) -> None:
    """The shared loop's step (phases, frozen modules, Adam), on one fixed batch; with `draws` (a
    generator state) every step makes the same random draws, so it minimises one fixed function."""
    optimizers = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.modules().items()}
    for step in range(first_step, first_step + steps):
        if draws is not None:
            method.generator.set_state(draws)
        for phase in method.phases(step):
            total = sum(phase_losses(method, models, batch, phase, step).values())
            optimizers[phase].zero_grad(set_to_none=True)
            total.backward()
            optimizers[phase].step()


@pytest.mark.parametrize("name", METHODS.names())
def test_loss_terms_are_finite_scalars(name, batch):
    method = make_method(name)
    models = tiny_models(method)
    for phase in method.phases(PAST_WARMUP):
        terms = phase_losses(method, models, batch, phase)
        assert terms, phase
        for term, value in terms.items():
            assert value.shape == () and torch.isfinite(value), (phase, term)
            assert value.requires_grad, (phase, term)


@pytest.mark.parametrize("name", METHODS.names())
def test_a_few_steps_on_a_fixed_batch_lower_the_training_loss(name, batch):
    method = make_method(name)
    models = tiny_models(method)
    state = method.generator.get_state()
    before = total_loss_at_fixed_draws(method, models, batch, state)
    train_steps(method, models, batch, steps=4, draws=state)
    after = total_loss_at_fixed_draws(method, models, batch, state)
    assert after < before


@pytest.mark.parametrize("name", METHODS.names())
def test_gradients_reach_the_classifier_and_not_the_target(name, batch):
    method = make_method(name)
    models = tiny_models(method)
    batch = {**batch, "mask": batch["mask"].clone().requires_grad_()}
    sum(phase_losses(method, models, batch, "classifier").values()).backward()
    classifier = models.classifier
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in classifier.parameters())
    assert classifier.backbone.conv1.weight.grad.abs().sum() > 0
    assert classifier.head.weight.grad.abs().sum() > 0
    assert batch["mask"].grad is None  # a fixed target is a constant
    if models.masker is not None:
        assert all(p.grad is None for p in models.masker.parameters())


# --- IRM -----------------------------------------------------------------------------------


def test_irm_penalty_is_zero_at_the_optimal_scale_and_positive_elsewhere():
    torch.manual_seed(0)
    half_labels = torch.tensor([0, 1, 2, 3, 0, 1])
    half = torch.randn(6, 4) + F.one_hot(half_labels, 4)  # informative, not separable
    labels = half_labels.repeat_interleave(2)
    logits = half.repeat_interleave(2, dim=0)  # even and odd samples alike: the estimate is exact

    def slope(scale: float) -> float:  # d/ds of the risk, which is convex in s
        s = torch.tensor(scale, requires_grad=True)
        return float(torch.autograd.grad(F.cross_entropy(s * logits, labels), s)[0])

    low, high = 0.01, 100.0
    assert slope(low) < 0 < slope(high)
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    optimum = (low + high) / 2
    assert irm_penalty(optimum * logits, labels).item() == pytest.approx(0, abs=1e-6)
    assert irm_penalty(2 * optimum * logits, labels).item() > 1e-3
    assert irm_penalty(0.5 * optimum * logits, labels).item() > 1e-3


def test_irm_environments_are_random_halves_and_the_penalty_anneals(batch):
    first, second = random_halves(9, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([first, second]).tolist()) == list(range(9))
    assert (len(first), len(second)) == (4, 5)
    other = random_halves(9, torch.Generator().manual_seed(1))[0]
    assert not torch.equal(first, other)
    method = make_method("irm", penalty_weight=100.0, anneal_fraction=0.25)  # of 20000 steps
    assert method.penalty_weight(4999) == 1.0 and method.penalty_weight(5000) == 100.0
    with pytest.raises(UserError, match="batch_size >= 4"):
        method.losses("classifier", {**batch, "image": batch["image"][:3],
                                     "label": batch["label"][:3]}, tiny_models(method), 0)


def test_irm_reaches_its_full_penalty_weight_well_inside_a_default_run():
    params = parse_params({})
    steps = params.train.steps
    config = resolve_config("irm", params.methods.irm.model_dump(), params.dataset)
    method = METHODS.get("irm")(config, torch.Generator(), total_steps=steps)
    weights = [method.penalty_weight(step) for step in range(steps)]
    assert weights[0] == 1.0
    full = [step for step, weight in enumerate(weights) if weight == config.penalty_weight]
    assert full and full[0] <= steps // 2 and full[-1] == steps - 1, full[:1]


def test_irm_penalty_alone_trains_the_classifier(batch):
    method = make_method("irm")
    models = tiny_models(method)
    phase_losses(method, models, batch, "classifier")["penalty"].backward()
    assert models.classifier.head.weight.grad.abs().sum() > 0


# --- Mixup ---------------------------------------------------------------------------------


def test_mixup_mixes_images_and_labels(batch):
    method = make_method("mixup", alpha=0.4)
    models = tiny_models(method)
    models.classifier.eval()  # BatchNorm on running statistics: the replay sees the same network
    loss = method.losses("classifier", batch, models, 0)["ce"]
    replay = torch.Generator().manual_seed(0)
    weight = float(beta_sample(0.4, 1, replay))
    partners = torch.randperm(8, generator=replay)
    assert 0 < weight < 1 and not torch.equal(partners, torch.arange(8))
    x, labels = batch["image"], batch["label"]
    logits = models.classifier(weight * x + (1 - weight) * x[partners])
    soft = weight * F.one_hot(labels, 3) + (1 - weight) * F.one_hot(labels[partners], 3)
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-3)


# --- SGT -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_sgt_masks_the_lowest_fraction_k_of_pixels_in_every_channel_within_its_range(fraction):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=generator)
    saliency = torch.randn(4, 8, 8, generator=generator)
    masked, where = mask_lowest_saliency(x, saliency, fraction, generator)
    pixels = where[:, 0]
    assert torch.equal(where, pixels[:, None].expand_as(where))  # a pixel goes in all channels
    assert torch.equal(pixels.flatten(1).sum(1), torch.full((4,), int(fraction * 64)))
    assert torch.equal(masked[~where], x[~where])
    highest_masked = saliency.masked_fill(~pixels, -1e9).flatten(1).amax(1)
    lowest_kept = saliency.masked_fill(pixels, 1e9).flatten(1).amin(1)
    assert torch.all(highest_masked < lowest_kept)  # signed: the most negative go first
    low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    assert torch.all((masked >= low) & (masked <= high))
    assert not torch.equal(masked[where], x[where])


def test_sgt_saliency_is_captums_on_the_true_logit_in_eval_mode_averaged_over_channels(batch):
    classifier = tiny_models(make_method("sgt")).classifier.train()
    running_mean = classifier.backbone.bn1.running_mean.clone()
    saliency = pixel_saliency(classifier, batch["image"], batch["label"])
    assert classifier.training  # the mode is restored ...
    assert torch.equal(classifier.backbone.bn1.running_mean, running_mean)  # ... stats untouched
    classifier.eval()
    inputs = batch["image"].clone().requires_grad_()
    authors = Saliency(classifier).attribute(inputs, target=batch["label"], abs=False).mean(1)
    assert saliency.shape == (8, 32, 32)
    assert torch.allclose(saliency, authors, atol=1e-7)


def test_sgt_loss_replays_the_authors_steps(batch):
    """Eval-mode saliency, signed channel mean, per-pixel mask, then CE + lambda * KL(clean||masked)
    from training-mode passes; the replay starts from a copy of the untouched classifier."""
    method = make_method("sgt", kl_weight=2.0)
    models = tiny_models(method)
    replica = copy.deepcopy(models.classifier)
    with training_phase(models, "classifier"):
        terms = method.losses("classifier", batch, models, 0)
    x, labels = batch["image"], batch["label"]
    replica.eval()
    inputs = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(replica(inputs).gather(1, labels[:, None]).sum(), inputs)
    masked, _ = mask_lowest_saliency(x, gradient.mean(1), 0.5, torch.Generator().manual_seed(0))
    replica.train()
    with torch.no_grad():
        clean, noisy = replica(x).log_softmax(1), replica(masked).log_softmax(1)
    expected = (clean.exp() * (clean - noisy)).sum(1).mean()
    assert terms["kl"].item() == pytest.approx(2 * expected.item(), rel=1e-4)
    assert terms["ce"].item() == pytest.approx(F.nll_loss(clean, labels).item(), rel=1e-5)


def test_sgt_can_rank_by_absolute_saliency(batch, monkeypatch):
    seen = []

    def record(x, saliency, *_):
        seen.append(saliency)
        return x, None

    monkeypatch.setattr("align.methods.sgt.mask_lowest_saliency", record)
    for absolute in (False, True):
        method = make_method("sgt", absolute_saliency=absolute)
        method.losses("classifier", batch, tiny_models(method), 0)
    assert (seen[0] < 0).any() and torch.equal(seen[1], seen[0].abs())


class FirstPixelLogits(torch.nn.Module):
    """Logits = the first two channels of the top-left pixel: predictions set by hand."""

    def forward(self, x):
        return x[:, :2, 0, 0]


def test_sgt_kl_is_of_the_clean_prediction_to_the_masked_one_by_hand(monkeypatch):
    """Ismail et al. (2021, Alg. 1) and their code: KL(f(x) || f(x masked)), clean first."""
    clean = torch.zeros(1, 3, 4, 4)
    clean[0, :2, 0, 0] = torch.tensor([0.5, 0.5]).log()
    masked = torch.zeros(1, 3, 4, 4)
    masked[0, :2, 0, 0] = torch.tensor([0.9, 0.1]).log()
    monkeypatch.setattr("align.methods.sgt.mask_lowest_saliency", lambda *args: (masked, None))
    method = make_method("sgt", kl_weight=1.0)
    models = Models(FirstPixelLogits())
    terms = method.losses("classifier", {"image": clean, "label": torch.tensor([0])}, models, 0)
    clean_first = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.511
    masked_first = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # 0.368
    assert terms["kl"].item() == pytest.approx(clean_first, rel=1e-5)
    assert terms["kl"].item() != pytest.approx(masked_first, rel=1e-2)


# --- SGDrop --------------------------------------------------------------------------------


def test_sgdrop_drops_the_most_salient_fraction_of_features():
    torch.manual_seed(0)
    classifier = create_classifier(3)
    features = torch.rand(2, 512, 2, 2)
    labels = torch.tensor([0, 2])
    keep = salient_feature_keep(classifier, features, labels, rho=0.9)
    dropped = 1 - keep.flatten(1).mean(1)
    assert torch.allclose(dropped, torch.full((2,), 0.1), atol=1 / 2048)
    attribution = features * classifier.head.weight[labels][:, :, None, None]
    kept_max = attribution.masked_fill(keep == 0, -1e9).flatten(1).amax(1)
    dropped_min = attribution.masked_fill(keep == 1, 1e9).flatten(1).amin(1)
    assert torch.all(kept_max < dropped_min)


def test_sgdrop_drops_in_training_only(batch):
    method = make_method("sgdrop")
    models = tiny_models(method)
    classifier = models.classifier.eval()
    before = classifier(batch["image"])
    train_steps(method, models, batch, steps=1)
    classifier.eval()
    assert not any(module._forward_hooks for module in classifier.modules())
    with torch.no_grad():
        undropped = classifier.classify_features(classifier.features(batch["image"]))
        assert torch.equal(classifier(batch["image"]), undropped)
    assert not torch.allclose(before, undropped)  # it did train
    classifier.train()
    with training_phase(models, "classifier"):
        loss = method.losses("classifier", batch, models, 0)["ce"]
        plain = F.cross_entropy(classifier(batch["image"]), batch["label"])
    assert loss.item() != pytest.approx(plain.item(), rel=1e-4)


# --- DRE, and w/o EG: the ablation that is not DRE -----------------------------------------


def test_dre_explanation_is_captums_layer_gradcam_min_max_normalised():
    """Li et al.'s MixupLoss: LayerGradCam on layer4 (no ReLU, layer resolution), then `norm`."""
    torch.manual_seed(0)
    classifier = create_classifier(3).eval()
    x = normalize(torch.rand(4, 3, 96, 96))
    labels = torch.tensor([0, 2, 1, 2])
    ours = dre_explanation(classifier, classifier.features(x), labels)
    cam = LayerGradCam(classifier, classifier.backbone.layer4).attribute(x, target=labels)
    low, high = cam.amin((2, 3), keepdim=True), cam.amax((2, 3), keepdim=True)
    assert ours.shape == (4, 1, 3, 3) and (cam < 0).any()  # not ReLU'd before normalising
    assert torch.allclose(ours, (cam - low) / (high - low), atol=1e-5)
    ours.sum().backward()  # captum's channel weights are constants: the head learns nothing here
    assert classifier.head.weight.grad is None
    assert classifier.backbone.layer4[1].conv2.weight.grad.abs().sum() > 0


def test_dre_loss_replays_the_authors_terms():
    """Consistency, sparsity and mixed CE by hand, each averaged per class and summed over the
    classifier's 4 classes (one absent) / 4, weighted 1, 0.5 and 0.1 (dre/train.py)."""
    method = make_method("dre")
    torch.manual_seed(0)
    classifier = create_classifier(4).eval()
    x = normalize(torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    labels = torch.tensor([0, 1, 0, 1, 1, 2])  # class 2 alone, class 3 absent
    terms = method.losses("classifier", {"image": x, "label": labels}, Models(classifier), 0)
    replay = torch.Generator().manual_seed(0)
    partners = same_class_partners(labels, replay)
    beta = beta_sample(0.2, 6, replay).view(-1, 1, 1, 1)
    mixed = beta * x + (1 - beta) * x[partners]
    grad_cam = LayerGradCam(classifier, classifier.backbone.layer4)

    def phi(images):
        cam = grad_cam.attribute(images, target=labels).detach()
        low, high = cam.amin((2, 3), keepdim=True), cam.amax((2, 3), keepdim=True)
        return (cam - low) / (high - low)

    clean_maps, mixed_maps = phi(x), phi(mixed)
    expected_maps = beta * clean_maps + (1 - beta) * clean_maps[partners]
    consistency = (mixed_maps - expected_maps).abs().mean((1, 2, 3))
    sparsity = (clean_maps.mean((1, 2, 3)) + mixed_maps.mean((1, 2, 3))) / 2
    mixed_ce = F.cross_entropy(classifier(mixed), labels, reduction="none")

    def per_class(values):
        return sum(values[labels == c].mean() for c in labels.unique().tolist()) / 4

    assert set(terms) == {"ce", "consistency", "sparsity", "mixed_ce"}
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(classifier(x), labels).item())
    assert terms["consistency"].item() == pytest.approx(per_class(consistency).item(), rel=1e-4)
    assert terms["sparsity"].item() == pytest.approx(0.5 * per_class(sparsity).item(), rel=1e-4)
    assert terms["mixed_ce"].item() == pytest.approx(0.1 * per_class(mixed_ce).item(), rel=1e-4)


def key(params: Params, method: str, dataset: str = "synthetic") -> str:
    return run_key(run_identity(params, RunSpec(dataset, "noise", method, 0)))


def test_guidance_free_configurations_are_one_run_wo_eg_and_not_dre():
    params = parse_params({})
    wo_eg = key(params, "wo_eg")
    identity = run_identity(params, RunSpec("synthetic", "noise", "wo_eg", 0))
    assert identity["params"]["method"] == "wo_eg"
    unguided = parse_params({"methods": {"align": {"lambda3": 0}, "m_gray": {"lambda3": 0}}})
    assert key(unguided, "align") == key(unguided, "m_gray") == wo_eg
    assert key(params, "align") != wo_eg and key(params, "m_gray") != wo_eg
    assert key(params, "dre") != wo_eg  # DRE's own loss is another experiment
    assert key(params, "wo_eg", "terra_incognita") != wo_eg  # lambda4 = 0.2 there
    terra = {"lambda3": 0, "per_dataset": {"terra_incognita": {"lambda4": 0.2}}}
    terra_unguided = parse_params({"methods": {"align": terra}})
    assert key(terra_unguided, "align", "terra_incognita") == key(
        params, "wo_eg", "terra_incognita")
    moved = parse_params({"methods": {"wo_eg": {"lambda4": 0.3},
                                      "align": {"lambda3": 0, "lambda4": 0.3}}})
    assert key(moved, "wo_eg") == key(moved, "align") != wo_eg
    erm = key(params, "erm")
    assert key(parse_params({"methods": {"wo_eg": {"lambda4": 0}}}), "wo_eg") == erm
    unregularised = {"consistency_weight": 0, "sparsity_weight": 0, "mixed_ce_weight": 0}
    assert key(parse_params({"methods": {"dre": unregularised}}), "dre") == erm


def test_align_without_guidance_trains_the_same_classifier_as_wo_eg(batch):
    """Same objective and same random draws: the masker steps change nothing in the classifier."""
    align = make_method("align", lambda3=0.0, warmup_steps=1)
    wo_eg = make_method("wo_eg")
    align_models, wo_eg_models = tiny_models(align), tiny_models(wo_eg)
    train_steps(align, align_models, batch, steps=3, first_step=0)
    train_steps(wo_eg, wo_eg_models, batch, steps=3, first_step=0)
    assert align.phases(2) == ("masker", "classifier")
    for (name, a), b in zip(align_models.classifier.state_dict().items(),
                            wo_eg_models.classifier.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# --- fixed-mask ablations ------------------------------------------------------------------


def test_grayscale_target_is_the_images_intensity():
    pixels = torch.zeros(1, 3, 2, 2)
    pixels[0, 0, 0, 0] = 1.0  # one red pixel
    pixels[0, :, 1, 1] = 1.0  # one white pixel
    gray = grayscale(normalize(pixels))
    assert gray.shape == (1, 1, 2, 2)
    assert torch.allclose(gray[0, 0], torch.tensor([[0.299, 0.0], [0.0, 1.0]]), atol=1e-5)


@pytest.mark.parametrize("name", ["m_gray", "m_sam", "m_gt"])
def test_fixed_masks_guide_after_aligns_warmup(name, batch):
    method = make_method(name, lambda3=0.3, lambda4=0.0, warmup_steps=5)
    assert method.phases(7) == ("classifier",) and not method.uses_masker
    models = tiny_models(method)
    assert set(phase_losses(method, models, batch, "classifier", step=4)) == {"ce"}
    terms = phase_losses(method, models, batch, "classifier", step=5)
    assert set(terms) == {"ce", "egl"}
    with training_phase(models, "classifier"):
        maps, _ = gradcam(models.classifier, batch["image"], batch["label"])
    target = grayscale(batch["image"]) if name == "m_gray" else batch["mask"]
    expected = F.binary_cross_entropy(maps.clamp(1e-6, 1 - 1e-6), target)
    assert terms["egl"].item() == pytest.approx(0.3 * expected.item(), rel=1e-4)


# --- where the masks come from, and training end to end -------------------------------------


def test_missing_masks_are_a_clear_error(tmp_path):
    params = parse_params({"data": {"root": str(tmp_path)}})
    with pytest.raises(UserError, match="dataset vlcs has none"):
        mask_shards_root(params, RunSpec("vlcs", "SUN09", "m_gt", 0), "gt")
    assert mask_shards_root(params, RunSpec("synthetic", "noise", "m_gt", 0), "gt") is None
    with pytest.raises(UserError, match="no SAM masks for synthetic.*set sam.checkpoint"):
        mask_shards_root(params, RunSpec("synthetic", "noise", "m_sam", 0), "sam")
    assert mask_shards_root(params, RunSpec("synthetic", "noise", "erm", 0), None) is None


def short(params: Params, **methods: dict) -> Params:
    raw = params.model_dump(mode="json")
    raw["train"].update(steps=4, eval_every=4, checkpoint_every=4)
    raw["grid"]["methods"] = ["erm"]  # the tests train what they name; the grid is not run
    for name, values in methods.items():
        raw["methods"][name].update(values)
    return parse_params(raw)


def test_align_without_guidance_trains_once_as_wo_eg(tiny_synthetic, tmp_path, monkeypatch):
    params = short(tiny_synthetic, align={"lambda3": 0})
    first = train_run(params, RunSpec("synthetic", "noise", "wo_eg", 0), tmp_path, False)
    monkeypatch.setattr(Trainer, "run", lambda self: pytest.fail("trained w/o EG a second time"))
    second = train_run(params, RunSpec("synthetic", "noise", "align", 0), tmp_path, False)
    assert (first / "model.pt").read_bytes() == (second / "model.pt").read_bytes()
    assert '"method": "wo_eg"' in (second / "identity.json").read_text()


def test_irm_starts_a_fresh_adam_when_its_penalty_weight_jumps(tiny_synthetic, tmp_path):
    """DomainBed's IRM replaces its Adam at `irm_penalty_anneal_iters`: the loop clears it."""
    params = short(tiny_synthetic, irm={"anneal_fraction": 0.5})  # 4 steps: the jump is at 2
    spec = RunSpec("synthetic", "noise", "irm", 0)
    trainer = Trainer(params, spec, run_identity(params, spec), tmp_path / "irm", False)
    resets = [trainer.method.resets_optimizer("classifier", step) for step in range(4)]
    assert resets == [False, False, True, False]
    trainer._make_loaders()
    batch = to_device(next(iter(trainer.train_loader)), trainer.device)
    adam, head = trainer.optimizers["classifier"], trainer.models.classifier.head.weight
    adam_steps = []
    for step in range(4):
        trainer.progress.step = step
        trainer._step(batch)
        adam_steps.append(int(adam.state[head]["step"]))
    assert adam_steps == [1, 2, 1, 2]


def write_sam_like_masks(params: Params, dataset: str) -> None:
    """Mask shards and a status as the SAM stage writes them, holding the inverted true masks."""
    images = params.data.root / "shards" / dataset
    for domain_dir in sorted(p for p in images.iterdir() if p.is_dir()):
        target = params.data.root / "masks" / "sam" / dataset / domain_dir.name
        target.mkdir(parents=True)
        for shard in sorted(domain_dir.glob("*.tar")):
            samples = wds.WebDataset(str(shard), shardshuffle=False, nodesplitter=None,
                                     workersplitter=None)
            with wds.TarWriter(str(target / shard.name)) as writer:
                for sample in samples:
                    mask = 255 - np.asarray(Image.open(io.BytesIO(sample["mask.png"])))
                    writer.write({"__key__": sample["__key__"], "mask.png": Image.fromarray(mask)})
        shutil.copy(domain_dir / "index.json", target / "index.json")
    status = {"available": True, "model_type": "vit_b", "prompt": "center_box", "samples": 240}
    (params.data.root / "masks" / "sam" / dataset / STATUS_NAME).write_text(json.dumps(status))


def copy_with_root(params: Params, root: Path, **methods: dict) -> Params:
    """`short(params)` on a copy of its data folder, which a test may then add to."""
    shutil.copytree(params.data.root, root)
    raw = short(params, **methods).model_dump(mode="json")
    return parse_params({**raw, "data": {**raw["data"], "root": str(root)}})


@pytest.mark.parametrize("name", ["m_gt", "m_sam"])
def test_mask_ablations_train_from_their_masks(name, tiny_synthetic, tmp_path):
    params = copy_with_root(tiny_synthetic, tmp_path / "data", **{name: {"warmup_steps": 1}})
    spec = RunSpec("synthetic", "noise", name, 0)
    if name == "m_sam":
        with pytest.raises(UserError, match="no SAM masks.*sam_masks"):
            train_run(params, spec, tmp_path / "runs", False)
        write_sam_like_masks(params, "synthetic")
    named = train_run(params, spec, tmp_path / "runs", False)
    logged = named / "dvclive" / "plots" / "metrics" / "train"
    assert {"ce.tsv", "egl.tsv", "reg.tsv"} <= {p.name for p in logged.iterdir()}


def test_sam_masks_come_from_their_shards_augmented_with_their_images(tiny_synthetic, tmp_path):
    warmups = {name: {"warmup_steps": 1} for name in ("m_sam", "m_gt")}
    params = copy_with_root(tiny_synthetic, tmp_path / "data", **warmups)
    write_sam_like_masks(params, "synthetic")

    def first_batch(method: str) -> dict:
        spec = RunSpec("synthetic", "noise", method, 0)
        trainer = Trainer(params, spec, run_identity(params, spec), tmp_path / method, False)
        trainer._make_loaders()
        return next(iter(trainer.train_loader))

    sam, truth = first_batch("m_sam"), first_batch("m_gt")
    assert sam["key"] == truth["key"] and torch.equal(sam["image"], truth["image"])
    # Anti-aliased object edges are resampled in 8 bits: 255 - m and m may round one level apart.
    assert torch.allclose(sam["mask"], 1 - truth["mask"], atol=1 / 255 + 1e-6)


# --- the same numbers however busy the machine is ---------------------------------------------


class RecordedOps(TorchDispatchMode):
    """Every ATen call made inside the block, the backward's included (it runs on this thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def adds_by_index(func, args: tuple, kwargs: dict) -> bool:
    """An accumulating index_put (the backward of `t[index]`): on the CPU it adds in parallel with
    atomics when it is large, so repeated indices sum in an order the machine's load decides."""
    aten = torch.ops.aten
    if func.overloadpacket in (aten.index_put, aten.index_put_, aten._index_put_impl_):
        return bool(kwargs.get("accumulate", args[3] if len(args) > 3 else False))
    return False


@pytest.mark.parametrize("name", METHODS.names())
def test_no_step_sums_by_index_in_an_order_the_machine_s_load_decides(name, batch):
    # A two-thread run on a loaded machine differed from the same run alone from step 2 on (1 in
    # 5 runs): ALIGN's mixup regulariser's `explanations[partners]`, whose backward adds the
    # gradients of repeated partners with parallel atomics.
    method = make_method(name)
    models = tiny_models(method)
    for phase in method.phases(PAST_WARMUP):
        with RecordedOps() as recorded:
            sum(phase_losses(method, models, batch, phase).values()).backward()
        assert [str(func) for func, args, kwargs in recorded.calls
                if adds_by_index(func, args, kwargs)] == [], phase
