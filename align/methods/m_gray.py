"""m-Gray (Hong et al., AAAI 2026, Sec. 5.4): ALIGN's classifier step toward M(x) = Gray(x), the
image's grayscale intensity, instead of a learned mask; no masker.

The paper says only "grayscale intensity values as the mask". Our choices: the intensity of the
image in [0,1] pixel space (not of its normalised values, which are not in [0,1] as BCE's target
must be), by the ITU-R 601 luma weights, at the image's resolution as the upsampled Grad-CAM is; the
weights and the warm-up are ALIGN's, so that only the target differs from ALIGN.
"""

from __future__ import annotations

from torch import Tensor

from align.data.transforms import denormalize
from align.methods.base import Batch, register_method
from align.methods.guidance import FixedMaskGuidance

LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601 weights, as PIL's and torchvision's RGB -> L conversion."""


def grayscale(x: Tensor) -> Tensor:
    """Intensity (B,1,H,W) in [0,1] of ImageNet-normalised images x (B,3,H,W)."""
    pixels = denormalize(x).clamp(0, 1)
    return (pixels * pixels.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


@register_method("m_gray")
class GrayGuidance(FixedMaskGuidance):
    display_name = "m-Gray"

    def target_masks(self, batch: Batch) -> Tensor:
        return grayscale(batch["image"])
