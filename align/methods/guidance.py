"""ALIGN's classifier step (Hong et al., AAAI 2026, Eq. 17), shared by ALIGN and the ablations that
replace its masker by a fixed mask (Sec. 5.4: m-SAM, m-Gray; and our m-GT oracle).

    L_clf = CE + lambda3*BCE(GradCAM_y(x), target) + lambda4*L_reg

The target is the masker's M(x) (ALIGN) or a fixed mask of the image; the first `warmup_steps` train
with no target, as ALIGN's warm-up does, so an ablation differs from ALIGN only in where the target
comes from. With lambda3 = 0 no target is used: the classifier's objective and its random draws
are the `w/o EG` ablation's, and `canonical` says so, so that run is trained once, as `wo_eg`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pydantic import Field
from torch import Tensor

from align.methods.base import Batch, Method, MethodConfig, Models
from align.methods.regularizers import guided_classifier_losses
from align.methods.wo_eg import same_as_wo_eg


class GuidanceConfig(MethodConfig):
    lambda3: float = Field(0.1, ge=0)
    """Explanation-guidance weight of the classifier (Eq. 17); 0 is the `w/o EG` ablation."""
    lambda4: float = Field(0.1, ge=0)
    """Weight of the mixup explanation regulariser (Eq. 17)."""
    mixup_alpha: float = Field(0.2, gt=0)
    """Beta(alpha, alpha) of the same-class mixup (Eq. 18); the paper does not state it."""
    warmup_steps: int = Field(200, ge=0)
    """Steps trained with CE + lambda4*L_reg alone before the guidance starts (Sec. 4.3)."""
    per_dataset: dict[str, dict[str, Any]] = {
        "terra_incognita": {"lambda3": 0.2, "lambda4": 0.2}
    }


class GuidedMethod(Method):
    """A method whose classifier step is Eq. 17 toward some target mask."""

    Config = GuidanceConfig

    @classmethod
    def canonical(cls, name: str, config: GuidanceConfig) -> tuple[str, dict[str, Any]]:
        if config.lambda3 == 0:
            return same_as_wo_eg(config.lambda4, config.mixup_alpha)
        return super().canonical(name, config)

    @classmethod
    def first_selectable_step(cls, config: GuidanceConfig) -> int:
        # Step `warmup_steps` (0-based) is the first with the guidance term, so a checkpoint taken
        # after `warmup_steps` completed steps is still the warm-up's (w/o EG's) model.
        return config.warmup_steps + 1

    def classifier_losses(
        self, batch: Batch, models: Models, target: Tensor | None
    ) -> dict[str, Tensor]:
        return guided_classifier_losses(
            models.classifier, batch["image"], batch["label"], self.generator,
            reg_weight=self.config.lambda4, mixup_alpha=self.config.mixup_alpha,
            target_masks=target, guidance_weight=self.config.lambda3,
        )


class FixedMaskGuidance(GuidedMethod):
    """ALIGN's classifier step toward a fixed mask of each image, with no masker."""

    @abstractmethod
    def target_masks(self, batch: Batch) -> Tensor:
        """The target (B,1,H,W) in [0,1] for the batch's images."""

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        target = self.target_masks(batch) if step >= self.config.warmup_steps else None
        return self.classifier_losses(batch, models, target)
