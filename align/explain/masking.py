"""Removing image regions in pixel space: the masker's inputs, and the ERASER-style metrics.

Images travel ImageNet-normalised; a mask multiplies the image in [0,1] pixel space, so a removed
pixel becomes black (pixel 0), not the mean colour (normalised 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return mean, std


def normalize(pixels: Tensor) -> Tensor:
    """(B,3,H,W) in [0,1] -> ImageNet-normalised."""
    mean, std = _stats(pixels)
    return (pixels - mean) / std


def denormalize(x: Tensor) -> Tensor:
    """ImageNet-normalised (B,3,H,W) -> pixel space [0,1]."""
    mean, std = _stats(x)
    return x * std + mean


def keep_region(x: Tensor, keep: Tensor) -> Tensor:
    """Normalised image (B,3,H,W) whose pixels are scaled by `keep` (B,1,H,W) in [0,1] toward black.

    Equals normalize(denormalize(x) * keep), computed without the round trip.
    """
    mean, std = _stats(x)
    return x * keep - (1 - keep) * mean / std
