"""SGT, Saliency Guided Training (Ismail, Corrada Bravo and Feizi, NeurIPS 2021, Alg. 1):

    S = |d f_y(x) / dx|,  x~ = x with its k lowest-saliency features replaced by random values,
    L = CE(f(x), y) + lambda * KL(softmax f(x~) || softmax f(x))

The saliency is the input gradient of the true class's logit, taken from the same forward pass as
the CE and detached; a feature is one value of one channel at one pixel, and exactly
round(k * 3HW) of them are masked per image. Masked values are drawn uniformly within the range
(min to max) of their channel in that image, from the method's generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from align.methods.base import Batch, Method, MethodConfig, Models, register_method


class SgtConfig(MethodConfig):
    masked_fraction: float = Field(0.5, gt=0, lt=1)
    """k: the fraction of input features masked per image."""
    kl_weight: float = Field(1.0, ge=0)
    """lambda: weight of the KL divergence between masked and clean predictions."""


def mask_lowest_saliency(
    x: Tensor, saliency: Tensor, fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Replace the `fraction` lowest-saliency features of each image by random values.

    x, saliency (B,C,H,W). Returns (masked images (B,C,H,W), masked positions bool (B,C,H,W)).
    Replacements are uniform in [min, max] of the image's channel.
    """
    flat = saliency.flatten(1)
    count = round(fraction * flat.shape[1])
    lowest = flat.topk(count, dim=1, largest=False).indices
    masked = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True).view_as(x)
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    uniform = torch.rand(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    return torch.where(masked, low + (high - low) * uniform, x), masked


@register_method("sgt")
class SGT(Method):
    Config = SgtConfig

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        x = batch["image"].detach().requires_grad_()
        labels = batch["label"]
        logits = models.classifier(x)
        true_class = logits.gather(1, labels[:, None]).sum()
        (saliency,) = torch.autograd.grad(true_class, x, retain_graph=True)
        masked, _ = mask_lowest_saliency(
            x.detach(), saliency.abs(), self.config.masked_fraction, self.generator
        )
        masked_logits = models.classifier(masked)
        # KL(P || Q) = sum P (log P - log Q), P from the masked input, Q from the clean one.
        kl = F.kl_div(
            F.log_softmax(logits.float(), dim=1), F.log_softmax(masked_logits.float(), dim=1),
            reduction="batchmean", log_target=True,
        )
        return {"ce": F.cross_entropy(logits, labels), "kl": self.config.kl_weight * kl}
