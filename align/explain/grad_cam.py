"""Batched, differentiable Grad-CAM (Selvaraju et al. 2017).

For ResNet's `layer4` followed by global average pooling and a linear head, the gradient of
the class score y w.r.t. the activation A_k at any position is W[y,k] / (h*w), so Grad-CAM has the
closed form ReLU(sum_k W[y,k] A_k) / (h*w): no backward pass, and differentiable by
construction. Other layers go through autograd with `create_graph=True`; both paths agree.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from align.models.classifier import ResNetClassifier
from align.rows import rows

EPS = 1e-7


def normalize_maps(maps: Tensor, eps: float = EPS) -> Tensor:
    """Scale each (B,1,H,W) non-negative map by its own maximum into [0,1]; zero maps stay 0."""
    return maps / (maps.amax(dim=(2, 3), keepdim=True) + eps)


def _finish(raw: Tensor, size: tuple[int, int]) -> Tensor:
    upsampled = F.interpolate(F.relu(raw), size=size, mode="bilinear", align_corners=False)
    return normalize_maps(upsampled)


def layer4_cam(features: Tensor, class_weights: Tensor) -> Tensor:
    """Closed-form `layer4` Grad-CAM before its ReLU, at the layer's resolution: (B,1,h,w).

    features (B,512,h,w); class_weights (B,512): the head's row of each sample's target class, so
    that W[y,k] / (h*w) is the gradient that Grad-CAM averages into channel k's weight.
    """
    raw = torch.einsum("bk,bkhw->bhw", class_weights, features).unsqueeze(1)
    return raw / (features.shape[2] * features.shape[3])


def gradcam_from_features(
    model: ResNetClassifier, features: Tensor, target: Tensor, size: tuple[int, int]
) -> Tensor:
    """Closed-form `layer4` Grad-CAM from features (B,512,h,w) already computed.

    target: class index per sample (B,). Returns (B,1,H,W) in [0,1] at `size`.
    """
    return _finish(layer4_cam(features, rows(model.head.weight, target)), size)


@contextmanager
def _capture(module: nn.Module):
    """Record the module's output during the block; the hook is removed whatever happens."""
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        yield captured
    finally:
        handle.remove()


def gradcam(
    model: ResNetClassifier,
    x: Tensor,
    target: Tensor | None = None,
    *,
    layer: str = "layer4",
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """Grad-CAM of `target` (B,) for input x (B,3,H,W); the predicted class when target is None.

    Returns (maps (B,1,H,W) in [0,1], logits (B,C)). For `layer4` the closed form is used; for any
    other sub-module of the backbone (e.g. `layer3`), autograd, differentiable with create_graph.
    """
    size = (x.shape[2], x.shape[3])
    if layer == "layer4":
        logits, features = model.forward_features(x)
        target = logits.argmax(1) if target is None else target
        return gradcam_from_features(model, features, target, size), logits

    with torch.enable_grad(), _capture(model.backbone.get_submodule(layer)) as captured:
        logits = model(x)
    activations = captured[0]
    target = logits.argmax(1) if target is None else target
    score = logits.gather(1, target[:, None]).sum()
    (grads,) = torch.autograd.grad(score, activations, create_graph=create_graph)
    channel_weights = grads.mean(dim=(2, 3), keepdim=True)
    return _finish((channel_weights * activations).sum(1, keepdim=True), size), logits
