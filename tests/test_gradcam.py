import gc

import pytest
import torch
from captum.attr import LayerGradCam

from align.explain import gradcam, normalize_maps
from align.explain.grad_cam import _finish
from align.models.classifier import create_classifier


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = create_classifier(num_classes=5).eval()
    x = torch.randn(4, 3, 64, 64)
    target = torch.tensor([0, 1, 2, 4])
    return model, x, target


def captum_map(model, layer, x, target):
    raw = LayerGradCam(model, model.backbone.get_submodule(layer)).attribute(
        x, target=target, relu_attributions=True
    )
    return _finish(raw, x.shape[2:])


def test_closed_form_matches_autograd_and_captum(model_and_batch):
    model, x, target = model_and_batch
    closed, logits = gradcam(model, x, target)
    assert closed.shape == (4, 1, 64, 64)
    assert torch.allclose(logits, model(x), atol=1e-6)
    hooked = model.backbone.layer4
    with torch.enable_grad():
        captured = []
        handle = hooked.register_forward_hook(lambda m, i, o: captured.append(o))
        out = model(x)
        handle.remove()
        (grads,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), captured[0])
    by_autograd = _finish((grads.mean((2, 3), keepdim=True) * captured[0]).sum(1, keepdim=True),
                          x.shape[2:])
    assert (closed - by_autograd).abs().max() < 1e-5
    assert (closed - captum_map(model, "layer4", x, target)).abs().max() < 1e-5


def test_autograd_path_matches_captum_on_another_layer(model_and_batch):
    model, x, target = model_and_batch
    maps, _ = gradcam(model, x, target, layer="layer3")
    assert (maps - captum_map(model, "layer3", x, target)).abs().max() < 1e-5


def test_maps_are_normalised_per_image(model_and_batch):
    model, x, target = model_and_batch
    maps, _ = gradcam(model, x, target)
    assert maps.min() >= 0
    assert torch.allclose(maps.amax(dim=(1, 2, 3)), torch.ones(4), atol=1e-4)
    zeros = normalize_maps(torch.zeros(2, 1, 4, 4))
    assert torch.equal(zeros, torch.zeros(2, 1, 4, 4))


def test_predicted_class_is_the_default_target(model_and_batch):
    model, x, _ = model_and_batch
    maps, logits = gradcam(model, x)
    expected, _ = gradcam(model, x, logits.argmax(1))
    assert torch.equal(maps, expected)


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_maps_are_differentiable_with_respect_to_weights(model_and_batch, layer):
    model, x, target = model_and_batch
    maps, _ = gradcam(model, x, target, layer=layer, create_graph=True)
    model.zero_grad()
    maps.mean().backward()
    grad = model.backbone.layer3[0].conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_no_hooks_left_and_memory_does_not_grow(model_and_batch):
    model, x, target = model_and_batch
    layer = model.backbone.layer3

    def run(times):
        for _ in range(times):
            maps, _ = gradcam(model, x, target, layer="layer3", create_graph=True)
            maps.sum().backward()
            model.zero_grad(set_to_none=True)

    run(3)
    gc.collect()
    before = len(gc.get_objects())
    run(20)
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert not layer._forward_hooks
    with pytest.raises(RuntimeError):
        gradcam(model, x[:, :2], target, layer="layer3")
    assert not layer._forward_hooks
