"""ALIGN (Hong et al., AAAI 2026, Sec. 4.3): a masker and a classifier trained in alternation.

Masker step (classifier frozen), Eqs. 12-16:
    dist = f_y(x*M) - f_y(x*(1-M));  L_mask = MSE(dist, 1) + lambda1*|M|_1 + lambda2*TV(M)
with f_y the softmax probability of the true class, and the L1 and TV terms as means over pixels.
The mask multiplies the image in [0,1] pixel space, before normalisation: removed parts are black.

Classifier step (masker frozen, its mask detached), Eq. 17:
    L_clf = CE + lambda3*BCE(GradCAM_y(x), M(x)) + lambda4*L_reg      (L_reg: Eq. 19)
The first `warmup_steps` train the classifier alone with CE + lambda4*L_reg. With lambda3 = 0 the
masker cannot reach the classifier: the run is the w/o EG ablation's and is trained once, as
`wo_eg` (`canonical`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from align.explain.masking import keep_region
from align.methods.base import Batch, Models, register_method
from align.methods.guidance import GuidanceConfig, GuidedMethod


class AlignConfig(GuidanceConfig):
    lambda1: float = Field(10.0, ge=0)
    """Sparsity weight of the masker (Eq. 16)."""
    lambda2: float = Field(1.0, ge=0)
    """Smoothness (total variation) weight of the masker (Eq. 16)."""


def total_variation(masks: Tensor) -> Tensor:
    """Eq. 15 for (B,1,H,W) masks: summed absolute neighbour differences, per pixel."""
    vertical = (masks[:, :, 1:, :] - masks[:, :, :-1, :]).abs().sum()
    horizontal = (masks[:, :, :, 1:] - masks[:, :, :, :-1]).abs().sum()
    return (vertical + horizontal) / masks.numel()


def masker_losses(
    config: AlignConfig, classifier: torch.nn.Module, masks: Tensor, x: Tensor, labels: Tensor
) -> dict[str, Tensor]:
    """Eqs. 12-16 for masks (B,1,H,W) of the normalised images x (B,3,H,W)."""
    both = torch.cat([keep_region(x, masks), keep_region(x, 1 - masks)])
    probabilities = classifier(both).softmax(dim=1)
    true_class = probabilities.gather(1, labels.repeat(2)[:, None]).squeeze(1)
    kept, removed = true_class.chunk(2)
    dist = kept - removed
    return {
        "dist": F.mse_loss(dist, torch.ones_like(dist)),
        "sparsity": config.lambda1 * masks.mean(),
        "smooth": config.lambda2 * total_variation(masks),
    }


@register_method("align")
class Align(GuidedMethod):
    display_name = "ALIGN"
    Config = AlignConfig
    uses_masker = True

    def phases(self, step: int) -> tuple[str, ...]:
        if step < self.config.warmup_steps:
            return ("classifier",)
        return ("masker", "classifier")

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        x, labels = batch["image"], batch["label"]
        if phase == "masker":
            return masker_losses(self.config, models.classifier, models.masker(x), x, labels)
        target = None
        if step >= self.config.warmup_steps:
            with torch.no_grad():
                target = models.masker(x)
        return self.classifier_losses(batch, models, target)
