"""Where a map puts its mass: on the object, on the shortcut, or elsewhere.

The direct measure of shortcut reliance the paper's claims are about: a classifier whose Grad-CAM
sits on the spurious cue reads the cue. For a map M >= 0 (B,1,H,W) and the image's object and
shortcut masks, each image's shares are

    object   = sum(M * O) / sum(M),  shortcut = sum(M * S') / sum(M),  elsewhere = the rest,

with O the object's pixels (ground truth >= 0.5), S' the shortcut's pixels (>= 0.5) that are not
the object's, so the three regions partition the image and the shares sum to 1. An image whose
map has no mass (an all-zero Grad-CAM, an empty mask) has no shares: NaN, left out of the means
and counted. A uniform map's shares are the regions' areas, the reference a map must beat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REGION_THRESHOLD = 0.5
"""Mask pixels at or above this value belong to the region (a resized mask holds fractions)."""
REGIONS = ("object", "shortcut", "elsewhere")


def regions(object_mask: Tensor, shortcut_mask: Tensor) -> Tensor:
    """(B,3,H,W) bool partition of each image into object, shortcut (off the object), elsewhere,
    from masks (B,1,H,W) in [0,1]."""
    on_object = object_mask >= REGION_THRESHOLD
    on_shortcut = (shortcut_mask >= REGION_THRESHOLD) & ~on_object
    return torch.cat([on_object, on_shortcut, ~(on_object | on_shortcut)], dim=1)


@torch.no_grad()
def attention_shares(maps: Tensor, object_mask: Tensor, shortcut_mask: Tensor) -> Tensor:
    """(B,3) share of each map's mass on the object, the shortcut and elsewhere (rows sum to 1);
    NaN rows for maps with no mass. maps (B,1,h,w) >= 0, resized bilinearly to the masks' size."""
    maps = maps.float()
    if maps.shape[-2:] != object_mask.shape[-2:]:
        maps = F.interpolate(maps, size=object_mask.shape[-2:], mode="bilinear",
                             align_corners=False)
    parts = regions(object_mask.to(maps.device), shortcut_mask.to(maps.device))
    mass = (maps * parts).flatten(2).sum(2)
    total = mass.sum(1, keepdim=True)
    return torch.where(total > 0, mass / total.clamp(min=1e-12), float("nan"))


class AttentionAccumulator:
    """Collects per-image shares over a split; `summary` averages them over images with mass."""

    def __init__(self) -> None:
        self._shares: list[Tensor] = []

    def update(self, maps: Tensor, object_mask: Tensor, shortcut_mask: Tensor) -> None:
        self._shares.append(attention_shares(maps, object_mask, shortcut_mask).cpu())

    def summary(self) -> dict[str, float | int]:
        """Mean shares in percent (`object`, `shortcut`, `elsewhere`), the images used and the
        images left out because their map had no mass (`num_no_mass`)."""
        if not self._shares:
            raise ValueError("no batches were added: the split is empty")
        shares = torch.cat(self._shares)
        valid = ~shares[:, 0].isnan()
        means = shares[valid].mean(0) * 100 if valid.any() else torch.full((3,), float("nan"))
        return {
            **{name: means[i].item() for i, name in enumerate(REGIONS)},
            "num_images": int(valid.sum()),
            "num_no_mass": int((~valid).sum()),
        }
