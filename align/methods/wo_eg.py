"""w/o EG (Hong et al., AAAI 2026, Sec. 5.4, Table 2): ALIGN with lambda3 = 0 in Eq. 17,

    L_clf = CE + lambda4 * L_reg        (L_reg: Eq. 19 on Eq. 18's same-class mixup)

With no guidance term the masker never reaches the classifier, so ALIGN's masker weights and
warm-up change nothing and are not knobs here; `align`, `m_gray`, `m_sam` and `m_gt` with
lambda3 = 0 are this experiment, trained once under this name (`same_as_wo_eg`), and so is ALIGN's
warm-up objective. With lambda4 = 0 as well it is ERM.

It is not DRE (Li et al., CVPR 2023), whose own loss weighs and normalises differently (see
`align.methods.dre`), although the paper's w/o EG row equals its DRE row: the paper evidently
reported this run for both; here they are two runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from align.methods.base import Batch, Method, MethodConfig, Models, register_method
from align.methods.erm import ERM
from align.methods.regularizers import guided_classifier_losses


class WithoutGuidanceConfig(MethodConfig):
    lambda4: float = Field(0.1, ge=0)
    """ALIGN's weight of the mixup explanation regulariser (Eq. 17)."""
    mixup_alpha: float = Field(0.2, gt=0)
    """Beta(alpha, alpha) of the same-class mixup (Eq. 18); the paper does not state it."""
    per_dataset: dict[str, dict[str, Any]] = {"terra_incognita": {"lambda4": 0.2}}


@register_method("wo_eg")
class WithoutGuidance(Method):
    display_name = "w/o EG"
    Config = WithoutGuidanceConfig

    @classmethod
    def canonical(cls, name: str, config: WithoutGuidanceConfig) -> tuple[str, dict[str, Any]]:
        if config.lambda4 == 0:  # CE alone, and the generator is never drawn from: ERM
            return ERM.canonical("erm", ERM.Config())
        return super().canonical("wo_eg", config)

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        return guided_classifier_losses(
            models.classifier, batch["image"], batch["label"], self.generator,
            reg_weight=self.config.lambda4, mixup_alpha=self.config.mixup_alpha,
        )


def same_as_wo_eg(lambda4: float, mixup_alpha: float) -> tuple[str, dict[str, Any]]:
    """The canonical (name, config) of w/o EG with these settings, for configurations that train a
    classifier on exactly its objective with the same random draws."""
    config = WithoutGuidanceConfig(lambda4=lambda4, mixup_alpha=mixup_alpha)
    return WithoutGuidance.canonical("wo_eg", config)
