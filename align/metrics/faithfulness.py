"""ERASER's sufficiency and comprehensiveness (DeYoung et al., ACL 2020), on images.

The rationale is the top k% of pixels of an explanation map, the Grad-CAM map (Selvaraju et al.
2017) of the predicted class. With p(.) the softmax probability of the class predicted on image x:

    comprehensiveness_k = p(x) - p(x with the top k% pixels removed)   (higher is better)
    sufficiency_k       = p(x) - p(x with only the top k% pixels kept)  (lower is better)

each averaged over k in AOPC_FRACTIONS (ERASER's AOPC bins) and reported in percentage points.

Ranking: pixels by map value, highest first; equal values in raster order (row by row), so the
result does not depend on the sort's whim. The top k% is round(k * H * W) pixels, at least one.

Fills for removed pixels (FILLS):
- `black`: pixel value 0, via `keep_region`, exactly as the masker removes pixels (the default);
- `mean`: the ImageNet mean colour, i.e. 0 in normalised space;
- `blur`: the image Gaussian-blurred (`blur_parameters`): detail removed, colour kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from align.explain.grad_cam import gradcam
from align.explain.masking import keep_region
from align.models.classifier import ResNetClassifier

AOPC_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)
FILLS = ("black", "mean", "blur")
Fill = Literal["black", "mean", "blur"]


def blur_parameters(height: int, width: int) -> tuple[int, float]:
    """Kernel size and sigma of the `blur` fill for an image of height x width.

    The kernel spans about a quarter of the shorter side (made odd, at least 3), wide enough to
    erase object detail at any image size; sigma follows OpenCV's rule for a kernel of that size,
    0.3 * ((kernel - 1) / 2 - 1) + 0.8 (e.g. 57 px and sigma 8.9 at 224 px; 9 px and 1.7 at 32 px).
    """
    kernel = max(3, (min(height, width) // 4) | 1)
    return kernel, 0.3 * ((kernel - 1) / 2 - 1) + 0.8


def fill_image(x: Tensor, fill: Fill) -> Tensor:
    """What replaces removed pixels of normalised images x (B,3,H,W), normalised, (B,3,H,W).

    For `black` this is the normalised value of pixel 0; `faithfulness` removes those pixels with
    `keep_region`, which gives the same images.
    """
    if fill == "black":
        return keep_region(x, torch.zeros_like(x[:, :1]))
    if fill == "mean":
        return torch.zeros_like(x)
    if fill == "blur":
        # Blurring commutes with the per-channel affine normalisation (the kernel sums to one and
        # padding reflects), so the normalised image can be blurred directly.
        kernel, sigma = blur_parameters(x.shape[2], x.shape[3])
        return TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    raise ValueError(f"unknown fill {fill!r}: use one of {', '.join(FILLS)}")


def top_fraction_masks(maps: Tensor, fractions: Sequence[float]) -> Tensor:
    """Boolean (B,K,H,W): for each map (B,1,H,W) and fraction k, its top round(k*H*W) pixels.

    Ties between equal map values are broken in raster order (the earlier pixel ranks higher).
    """
    if not fractions or not all(0 < k <= 1 for k in fractions):
        raise ValueError(f"fractions must be a non-empty list of values in (0, 1], got {fractions}")
    b, _, h, w = maps.shape
    flat = maps.reshape(b, h * w)
    order = flat.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(h * w, device=maps.device).expand(b, -1)
    )
    counts = torch.tensor([max(1, round(k * h * w)) for k in fractions], device=maps.device)
    return (rank[:, None, :] < counts[None, :, None]).view(b, len(fractions), h, w)


@dataclass(frozen=True)
class Faithfulness:
    """Per-image ERASER curves, in percentage points, over `fractions`."""

    fractions: tuple[float, ...]
    sufficiency_curve: Tensor
    """(B,K): p(x) - p(only the top k% kept)."""
    comprehensiveness_curve: Tensor
    """(B,K): p(x) - p(top k% removed)."""
    predicted: Tensor
    """(B,): the class whose probability is measured."""

    @property
    def sufficiency(self) -> Tensor:
        """(B,) AOPC sufficiency: the curve averaged over fractions; lower is better."""
        return self.sufficiency_curve.mean(1)

    @property
    def comprehensiveness(self) -> Tensor:
        """(B,) AOPC comprehensiveness; higher is better."""
        return self.comprehensiveness_curve.mean(1)


@torch.no_grad()
def faithfulness(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    fractions: Sequence[float] = AOPC_FRACTIONS,
    fill: Fill = "black",
    chunk_size: int = 256,
) -> Faithfulness:
    """Sufficiency and comprehensiveness of `maps` (B,1,h,w) for normalised images x (B,3,H,W).

    `model` (in eval mode, on x's device) maps x to logits (B,C); the maps should explain its
    predicted class (Grad-CAM with target None) and are resized bilinearly to H x W if needed. The
    B * K * 2 perturbed images are built and classified chunk_size at a time, which bounds memory.
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}: use one of {', '.join(FILLS)}")
    fractions = tuple(float(k) for k in fractions)
    batch, num_k = x.shape[0], len(fractions)
    if maps.shape[-2:] != x.shape[-2:]:
        maps = F.interpolate(maps.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    probs = torch.softmax(model(x).float(), dim=1)
    predicted = probs.argmax(1)
    full = probs.gather(1, predicted[:, None]).squeeze(1)
    top = top_fraction_masks(maps, fractions)
    background = None if fill == "black" else fill_image(x, fill)

    # Perturbed image j is image j // (2K) at fraction (j // 2) % K, top removed (j even) or kept.
    perturbed_probs = torch.empty(batch * num_k * 2, device=x.device)
    for start in range(0, perturbed_probs.numel(), chunk_size):
        j = torch.arange(start, min(start + chunk_size, perturbed_probs.numel()), device=x.device)
        image, fraction, keep_top = j // (2 * num_k), (j // 2) % num_k, j % 2 == 1
        in_top = top[image, fraction]
        keep = torch.where(keep_top[:, None, None], in_top, ~in_top)[:, None].to(x.dtype)
        if background is None:
            perturbed = keep_region(x[image], keep)
        else:
            perturbed = x[image] * keep + background[image] * (1 - keep)
        chunk_probs = torch.softmax(model(perturbed).float(), dim=1)
        perturbed_probs[j] = chunk_probs.gather(1, predicted[image, None]).squeeze(1)
    perturbed_probs = perturbed_probs.view(batch, num_k, 2)
    return Faithfulness(
        fractions=fractions,
        comprehensiveness_curve=(full[:, None] - perturbed_probs[..., 0]) * 100,
        sufficiency_curve=(full[:, None] - perturbed_probs[..., 1]) * 100,
        predicted=predicted,
    )


def gradcam_faithfulness(
    model: ResNetClassifier,
    x: Tensor,
    fractions: Sequence[float] = AOPC_FRACTIONS,
    fill: Fill = "black",
    chunk_size: int = 256,
) -> Faithfulness:
    """`faithfulness` of the layer4 Grad-CAM maps of the predicted class: the paper's Suff/Comp."""
    with torch.no_grad():
        maps, _ = gradcam(model, x)
    return faithfulness(model, x, maps, fractions, fill, chunk_size)


class FaithfulnessAccumulator:
    """Collects per-image sufficiency and comprehensiveness over a split; `summary` averages."""

    def __init__(self) -> None:
        self._sufficiency: list[Tensor] = []
        self._comprehensiveness: list[Tensor] = []

    def update(self, result: Faithfulness) -> None:
        self._sufficiency.append(result.sufficiency.cpu())
        self._comprehensiveness.append(result.comprehensiveness.cpu())

    def summary(self) -> dict[str, float]:
        """Mean AOPC sufficiency and comprehensiveness (percentage points) and the image count."""
        if not self._sufficiency:
            raise ValueError("no batches were added: the split is empty")
        sufficiency = torch.cat(self._sufficiency)
        return {
            "sufficiency": sufficiency.mean().item(),
            "comprehensiveness": torch.cat(self._comprehensiveness).mean().item(),
            "num_images": sufficiency.numel(),
        }
