"""ALIGN's loss terms against hand-computed values, gradient routing, and the warm-up."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from align.data.transforms import denormalize, normalize
from align.explain import gradcam
from align.explain.masking import keep_region
from align.methods.align import Align, AlignConfig, masker_losses, total_variation
from align.methods.base import Models
from align.methods.regularizers import beta_sample, explanation_mixup_loss, same_class_partners
from align.models.classifier import create_classifier
from align.models.masker import Masker
from align.train import training_phase


class MeanPixelClassifier(nn.Module):
    """Logits = W @ (mean pixel per channel): simple enough to compute the masker loss by hand."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(denormalize(x).mean(dim=(2, 3)))


def test_total_variation_by_hand():
    mask = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    # vertical |1-0| + |1-1| = 1, horizontal |1-0| + |1-1| = 1, over 4 pixels
    assert total_variation(mask).item() == pytest.approx(0.5)


def test_keep_region_is_masking_in_pixel_space():
    pixels = torch.rand(2, 3, 5, 5)
    keep = torch.rand(2, 1, 5, 5)
    assert torch.allclose(keep_region(normalize(pixels), keep), normalize(pixels * keep), atol=1e-6)
    assert torch.allclose(denormalize(keep_region(normalize(pixels), torch.zeros(2, 1, 5, 5))),
                          torch.zeros(2, 3, 5, 5), atol=1e-6)


def test_masker_losses_by_hand():
    pixels = torch.zeros(1, 3, 2, 2)
    pixels[0, 0] = 1.0  # a red image
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    config = AlignConfig(lambda1=10, lambda2=1)
    terms = masker_losses(config, MeanPixelClassifier(), mask, normalize(pixels), torch.tensor([0]))
    # kept half: mean red 0.5 -> logits (0.5, 0) ; removed half: the same
    p_keep = torch.softmax(torch.tensor([0.5, 0.0]), 0)[0]
    dist = p_keep - p_keep
    assert terms["dist"].item() == pytest.approx(float((dist - 1) ** 2), abs=1e-6)
    assert terms["sparsity"].item() == pytest.approx(10 * 0.5)
    assert terms["smooth"].item() == pytest.approx(1 * (2 / 4))


@pytest.fixture
def tiny_setup():
    torch.manual_seed(0)
    classifier = create_classifier(3)
    masker = Masker(width=4)
    x = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return Models(classifier, masker), {"image": x, "label": labels}


def test_classifier_losses_by_hand(tiny_setup):
    models, batch = tiny_setup
    config = AlignConfig(lambda3=0.3, lambda4=0.0, warmup_steps=0)
    method = Align(config, torch.Generator().manual_seed(0), total_steps=1000)
    with training_phase(models, "classifier"):
        terms = method.losses("classifier", batch, models, step=5)
        models.classifier.train()
        logits = models.classifier(batch["image"])
        maps, _ = gradcam(models.classifier, batch["image"], batch["label"])
        with torch.no_grad():
            target = models.masker(batch["image"])
    assert set(terms) == {"ce", "egl"}
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, batch["label"]).item(),
                                               rel=1e-5)
    bounded = maps.clamp(1e-6, 1 - 1e-6)
    expected = bounded.log() * target + (1 - bounded).log() * (1 - target)
    assert terms["egl"].item() == pytest.approx(0.3 * -expected.mean().item(), rel=1e-4)


def test_mixup_regulariser_by_hand():
    torch.manual_seed(0)
    classifier = create_classifier(2).eval()
    x = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 0, 1, 1])
    maps, _ = gradcam(classifier, x, labels)
    generator = torch.Generator().manual_seed(3)
    loss = explanation_mixup_loss(classifier, x, labels, maps, 0.4, generator)
    replay = torch.Generator().manual_seed(3)
    partners = same_class_partners(labels, replay)
    beta = beta_sample(0.4, 4, replay).view(-1, 1, 1, 1)
    assert torch.all(labels[partners] == labels)
    mixed = beta * x + (1 - beta) * x[partners]
    mixed_maps, mixed_logits = gradcam(classifier, mixed, labels)
    expected = ((beta * maps + (1 - beta) * maps[partners] - mixed_maps).abs().mean()
                + F.cross_entropy(mixed_logits, labels) + mixed_maps.abs().mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def _grads(module):
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("phase", ["masker", "classifier"])
def test_each_phase_reaches_only_its_module(tiny_setup, phase):
    models, batch = tiny_setup
    method = Align(AlignConfig(warmup_steps=0), torch.Generator().manual_seed(0), total_steps=1000)
    with training_phase(models, phase):
        sum(method.losses(phase, batch, models, step=1).values()).backward()
    trained, frozen = (models.masker, models.classifier) if phase == "masker" else (
        models.classifier, models.masker)
    assert all(g is not None and torch.isfinite(g).all() for g in _grads(trained))
    assert any(g.abs().sum() > 0 for g in _grads(trained))
    assert all(g is None for g in _grads(frozen))


def test_frozen_classifier_keeps_its_batchnorm_statistics(tiny_setup):
    models, batch = tiny_setup
    before = models.classifier.backbone.bn1.running_mean.clone()
    method = Align(AlignConfig(warmup_steps=0), torch.Generator().manual_seed(0), total_steps=1000)
    with training_phase(models, "masker"):
        method.losses("masker", batch, models, step=1)
    assert torch.equal(before, models.classifier.backbone.bn1.running_mean)


def test_warmup_skips_the_masker_and_the_guidance(tiny_setup):
    models, batch = tiny_setup
    method = Align(AlignConfig(warmup_steps=10), torch.Generator().manual_seed(0), total_steps=1000)
    assert method.phases(9) == ("classifier",)
    assert method.phases(10) == ("masker", "classifier")

    def refuse(*_):
        raise AssertionError("the masker must not run during warm-up")

    models.masker.forward = refuse
    with training_phase(models, "classifier"):
        terms = method.losses("classifier", batch, models, step=9)
    assert set(terms) == {"ce", "reg"}


# --- same-class partners of the mixup regulariser (Eq. 18) ---------------------------------


def test_same_class_partners_are_other_samples_of_the_class_when_there_is_one():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 0] * 4)  # class 3 has 4 samples, each pairable
    labels[-2] = 4  # ... and now one sample of class 4 stands alone
    for seed in range(50):
        partners = same_class_partners(labels, torch.Generator().manual_seed(seed))
        assert torch.equal(labels[partners], labels)
        alone = torch.arange(len(labels)) == len(labels) - 2
        assert torch.equal(partners == torch.arange(len(labels)), alone)


def test_same_class_partners_are_drawn_uniformly_among_the_class():
    labels = torch.tensor([0, 1, 0, 1, 0, 0])  # sample 0 has partners 2, 4 and 5
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([same_class_partners(labels, generator)[0] for _ in range(3000)])
    counts = torch.bincount(draws, minlength=6)
    assert counts[[0, 1, 3]].sum() == 0
    # Each of the three is chosen 1000 times in expectation; 5 standard deviations is ~130.
    assert torch.all((counts[[2, 4, 5]] - 1000).abs() < 130), counts


def test_same_class_partners_come_from_the_generator_alone():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2])
    first = same_class_partners(labels, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(same_class_partners(labels, torch.Generator().manual_seed(7)), first)
    generator = torch.Generator().manual_seed(7)
    draws = [same_class_partners(labels, generator) for _ in range(10)]
    assert any(not torch.equal(draw, first) for draw in draws[1:])  # the state advances
