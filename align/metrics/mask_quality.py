"""How well a predicted map matches a ground-truth object mask: IoU, soft Dice, pointing game.

Used for the masker's masks, SAM's masks and each method's Grad-CAM (Selvaraju et al. 2017) on
datasets that ship object masks. All inputs are (B,1,H,W) in [0,1] (bool also accepted); a
predicted map of another size is resized bilinearly to the ground truth's size.

Rules:
- The object is where the ground truth is >= 0.5 (a resized mask holds coverage fractions).
- An image whose ground truth has no object pixel gets NaN for every metric: no metric has a
  meaning there. Summaries leave such images out and report how many were left out.
- Pointing game (Zhang et al. 2016, without tolerance): a hit when the map's maximum lies inside
  the object. When several pixels share the maximum, the score is the fraction of them inside the
  object, the expected hit of picking one at random, so a flat map earns the object's area, not a
  free hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

OBJECT_THRESHOLD = 0.5
"""Ground-truth pixels at or above this value belong to the object."""
EPS = 1e-7


def _align(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(pred as float at gt's size, gt as float, the images' empty-ground-truth flags (B,))."""
    pred, gt = pred.float(), gt.float().to(pred.device)
    if pred.shape[-2:] != gt.shape[-2:]:
        pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    empty = ~(gt >= OBJECT_THRESHOLD).flatten(1).any(1)
    return pred, gt, empty


def _nan_where(values: Tensor, empty: Tensor) -> Tensor:
    return values.masked_fill(empty, float("nan"))


def iou(pred: Tensor, gt: Tensor, threshold: float = 0.5) -> Tensor:
    """(B,) intersection over union of pred >= threshold and the object; NaN for empty GT."""
    pred, gt, empty = _align(pred, gt)
    predicted, target = pred >= threshold, gt >= OBJECT_THRESHOLD
    intersection = (predicted & target).flatten(1).sum(1)
    union = (predicted | target).flatten(1).sum(1)
    return _nan_where(intersection / union.clamp(min=1), empty)


def soft_dice(pred: Tensor, gt: Tensor, eps: float = EPS) -> Tensor:
    """(B,) soft Dice 2 sum(pq) / (sum p + sum q + eps) of the raw maps; NaN for empty GT."""
    pred, gt, empty = _align(pred, gt)
    overlap = (pred * gt).flatten(1).sum(1)
    total = pred.flatten(1).sum(1) + gt.flatten(1).sum(1)
    return _nan_where(2 * overlap / (total + eps), empty)


def pointing_game(pred: Tensor, gt: Tensor) -> Tensor:
    """(B,) 1 when the map's maximum lies inside the object, 0 outside, the fraction on ties."""
    pred, gt, empty = _align(pred, gt)
    flat = pred.flatten(1)
    at_max = flat == flat.amax(1, keepdim=True)
    inside = at_max & (gt.flatten(1) >= OBJECT_THRESHOLD)
    return _nan_where(inside.sum(1) / at_max.sum(1).clamp(min=1), empty)


@dataclass(frozen=True)
class MaskQuality:
    """Per-image scores (B,) in [0,1]; NaN where the ground truth is empty."""

    iou: Tensor
    dice: Tensor
    pointing: Tensor


@torch.no_grad()
def mask_quality(pred: Tensor, gt: Tensor, threshold: float = 0.5) -> MaskQuality:
    """IoU (at `threshold`), soft Dice and pointing game of maps pred against masks gt."""
    return MaskQuality(
        iou=iou(pred, gt, threshold), dice=soft_dice(pred, gt), pointing=pointing_game(pred, gt)
    )


class MaskQualityAccumulator:
    """Collects per-image mask scores over a split; `summary` averages over non-empty GT."""

    def __init__(self) -> None:
        self._scores: list[Tensor] = []

    def update(self, result: MaskQuality) -> None:
        self._scores.append(torch.stack([result.iou, result.dice, result.pointing], 1).cpu())

    def summary(self) -> dict[str, float | int]:
        """Means in percent over images with an object, and the counts used and left out."""
        if not self._scores:
            raise ValueError("no batches were added: the split is empty")
        scores = torch.cat(self._scores)
        valid = ~scores[:, 0].isnan()
        means = scores[valid].mean(0) * 100 if valid.any() else torch.full((3,), float("nan"))
        return {
            "iou": means[0].item(),
            "dice": means[1].item(),
            "pointing_game": means[2].item(),
            "num_images": int(valid.sum()),
            "num_empty_gt": int((~valid).sum()),
        }
