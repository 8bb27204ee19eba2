"""How well a predicted map matches a ground-truth object mask (IoU, soft Dice, pointing game,
mean map value inside and outside the object), and how much a map varies at all (its spread).

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
- Inside / outside: the map's mean value over the object's pixels and over the other pixels. A map
  that marks the object is high inside and low outside; a uniform map has both equal.
- Spread: the standard deviation of a map's values over its pixels (population, ddof 0), per
  image. It needs no ground truth: 0 for a uniform map (it says nothing about where the object
  is), 0.5 at most for a map in [0,1] (half its pixels 0, half 1). Summaries average it over
  images.
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


def inside_outside(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) mean map value over the object's pixels and (B,) over the others; both NaN for empty
    GT (as every metric here), the second also where the object fills the image."""
    pred, gt, empty = _align(pred, gt)
    target = (gt >= OBJECT_THRESHOLD).flatten(1)
    flat = pred.flatten(1)
    inside = (flat * target).sum(1) / target.sum(1).clamp(min=1)
    outside = (flat * ~target).sum(1) / (~target).sum(1).clamp(min=1)
    return _nan_where(inside, empty), _nan_where(outside, empty | target.all(1))


def spread(pred: Tensor) -> Tensor:
    """(B,) standard deviation (ddof 0) of each map's values over its pixels, in [0, 0.5] for maps
    (B,1,H,W) in [0,1]: 0 for a uniform map."""
    return pred.float().flatten(1).std(1, correction=0)


@dataclass(frozen=True)
class MaskQuality:
    """Per-image scores (B,) in [0,1]; NaN where the ground truth is empty (`outside`: where the
    object fills the image)."""

    iou: Tensor
    dice: Tensor
    pointing: Tensor
    inside: Tensor
    outside: Tensor


@torch.no_grad()
def mask_quality(pred: Tensor, gt: Tensor, threshold: float = 0.5) -> MaskQuality:
    """IoU (at `threshold`), soft Dice, pointing game and the mean inside and outside the object
    of maps pred against masks gt."""
    inside, outside = inside_outside(pred, gt)
    return MaskQuality(
        iou=iou(pred, gt, threshold), dice=soft_dice(pred, gt), pointing=pointing_game(pred, gt),
        inside=inside, outside=outside,
    )


class MaskQualityAccumulator:
    """Collects per-image mask scores over a split; `summary` averages over non-empty GT."""

    def __init__(self) -> None:
        self._scores: list[Tensor] = []

    def update(self, result: MaskQuality) -> None:
        self._scores.append(torch.stack(
            [result.iou, result.dice, result.pointing, result.inside, result.outside], 1
        ).cpu())

    def summary(self) -> dict[str, float | int]:
        """Means in percent over images with an object (`outside`: those that also have
        background), and the counts used and left out."""
        if not self._scores:
            raise ValueError("no batches were added: the split is empty")
        scores = torch.cat(self._scores)
        valid = ~scores[:, 0].isnan()
        # nanmean of an all-NaN column is NaN: "no test image has a ground-truth object".
        means = scores.nanmean(0) * 100
        return {
            "iou": means[0].item(),
            "dice": means[1].item(),
            "pointing_game": means[2].item(),
            "inside": means[3].item(),
            "outside": means[4].item(),
            "num_images": int(valid.sum()),
            "num_empty_gt": int((~valid).sum()),
        }


class MaskSpreadAccumulator:
    """Collects each map's spread and mean value over a split, with or without ground truth."""

    def __init__(self) -> None:
        self._scores: list[Tensor] = []

    @torch.no_grad()
    def update(self, pred: Tensor) -> None:
        """Add maps (B,1,H,W) in [0,1]."""
        self._scores.append(torch.stack([spread(pred), pred.float().flatten(1).mean(1)], 1).cpu())

    def summary(self) -> dict[str, float]:
        """Spread and mean map value in percent of the [0,1] range, averaged over images."""
        if not self._scores:
            raise ValueError("no batches were added: the split is empty")
        means = torch.cat(self._scores).mean(0) * 100
        return {"spread": means[0].item(), "mean_value": means[1].item()}
