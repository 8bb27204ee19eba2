"""DRE (Li, Qiao, Ma and Peng, "Are Data-driven Explanations Robust against Out-of-distribution
Data?", CVPR 2023): cross-entropy plus an explanation consistency regulariser under mixup.

    L = CE(f(x), y) + lambda_reg * L_reg

with L_reg the same-class mixup regulariser in the form ALIGN uses (Hong et al. 2026, Eqs. 18-19):
explanation consistency, CE on the mixed image, and sparsity of its explanation. It is ALIGN's
classifier objective without the guidance term, which is why the paper's `w/o EG` row equals its
DRE row, and why `wo_eg` and `align` with lambda3 = 0 are this method (see `same_as_dre`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from align.methods.base import Batch, Method, MethodConfig, Models, register_method
from align.methods.erm import ERM
from align.methods.regularizers import guided_classifier_losses


class DreConfig(MethodConfig):
    lambda_reg: float = Field(0.1, ge=0)
    """Weight of the mixup explanation regulariser; as ALIGN's lambda4, per dataset."""
    mixup_alpha: float = Field(0.2, gt=0)
    """Beta(alpha, alpha) of the same-class mixup (Eq. 18)."""
    per_dataset: dict[str, dict[str, Any]] = {"terra_incognita": {"lambda_reg": 0.2}}


@register_method("dre")
class DRE(Method):
    Config = DreConfig

    @classmethod
    def canonical(cls, name: str, config: DreConfig) -> tuple[str, dict[str, Any]]:
        if config.lambda_reg == 0:  # CE alone, and the generator is never drawn from: ERM
            return ERM.canonical("erm", ERM.Config())
        return super().canonical(name, config)

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        return guided_classifier_losses(
            models.classifier, batch["image"], batch["label"], self.generator,
            reg_weight=self.config.lambda_reg, mixup_alpha=self.config.mixup_alpha,
        )


def same_as_dre(lambda_reg: float, mixup_alpha: float) -> tuple[str, dict[str, Any]]:
    """The canonical (name, config) of DRE with these settings, for configurations that train a
    classifier on exactly DRE's objective with the same random draws."""
    return DRE.canonical("dre", DreConfig(lambda_reg=lambda_reg, mixup_alpha=mixup_alpha))
