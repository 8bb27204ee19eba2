"""m-SAM (Hong et al., AAAI 2026, Sec. 5.4): ALIGN's classifier step toward the image's Segment
Anything mask (Kirillov et al. 2023) instead of a learned mask; no masker.

The masks are precomputed by the `sam_masks` stage into shards keyed like the image shards, and the
loader crops and flips each one with its image; without them training stops and says so.
"""

from __future__ import annotations

from torch import Tensor

from align.methods.base import Batch, register_method
from align.methods.guidance import FixedMaskGuidance


@register_method("m_sam")
class SamGuidance(FixedMaskGuidance):
    display_name = "m-SAM"
    mask_source = "sam"

    def target_masks(self, batch: Batch) -> Tensor:
        return batch["mask"]
