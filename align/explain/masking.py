"""Removing image regions in pixel space: the masker's inputs, and the ERASER-style metrics.

Images travel ImageNet-normalised; a mask multiplies the image in [0,1] pixel space, so a removed
pixel becomes black (pixel 0), not the mean colour (normalised 0).
"""

from __future__ import annotations

from torch import Tensor

from align.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def keep_region(x: Tensor, keep: Tensor) -> Tensor:
    """Normalised image (B,3,H,W) whose pixels are scaled by `keep` (B,1,H,W) in [0,1] toward black.

    Equals normalize(denormalize(x) * keep), computed without the round trip.
    """
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x * keep - (1 - keep) * mean / std
