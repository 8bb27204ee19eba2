"""m-GT: ALIGN's classifier step toward the ground-truth object mask, with no masker.

Not in the paper (its datasets have no masks): an oracle, and so an upper bound on what guidance
by a mask can give. It needs a dataset whose shards carry masks (`synthetic`).
"""

from __future__ import annotations

from torch import Tensor

from align.methods.base import Batch, register_method
from align.methods.guidance import FixedMaskGuidance


@register_method("m_gt")
class GroundTruthGuidance(FixedMaskGuidance):
    display_name = "m-GT"
    mask_source = "gt"

    def target_masks(self, batch: Batch) -> Tensor:
        return batch["mask"]
