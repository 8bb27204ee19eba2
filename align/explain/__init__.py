"""Explanations: batched, differentiable Grad-CAM in torch."""

from align.explain.grad_cam import gradcam, gradcam_from_features, layer4_cam, normalize_maps

__all__ = ["gradcam", "gradcam_from_features", "layer4_cam", "normalize_maps"]
