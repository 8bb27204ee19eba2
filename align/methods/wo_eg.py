"""w/o EG (Hong et al., AAAI 2026, Sec. 5.4, Table 2): ALIGN with lambda3 = 0.

With no guidance term the masker never reaches the classifier, whose objective, CE + lambda4*L_reg,
and random draws are then DRE's (Li et al., CVPR 2023); the paper's w/o EG row equals its DRE row.
So this name resolves to DRE: its run identity is DRE's with lambda_reg = lambda4 and it is trained
once, whichever name asks first. ALIGN's masker weights and warm-up change nothing here, so they
are not knobs of this section.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from align.methods.base import MethodConfig, register_method
from align.methods.dre import DRE, DreConfig, same_as_dre


class WithoutGuidanceConfig(MethodConfig):
    lambda4: float = Field(0.1, ge=0)
    """ALIGN's weight of the mixup explanation regulariser (Eq. 17)."""
    mixup_alpha: float = Field(0.2, gt=0)
    per_dataset: dict[str, dict[str, Any]] = {"terra_incognita": {"lambda4": 0.2}}


def as_dre(config: WithoutGuidanceConfig) -> DreConfig:
    return DreConfig(lambda_reg=config.lambda4, mixup_alpha=config.mixup_alpha)


@register_method("wo_eg")
class WithoutGuidance(DRE):
    Config = WithoutGuidanceConfig

    def __init__(
        self, config: WithoutGuidanceConfig, generator: torch.Generator, *, total_steps: int
    ) -> None:
        super().__init__(as_dre(config), generator, total_steps=total_steps)

    @classmethod
    def canonical(cls, name: str, config: WithoutGuidanceConfig) -> tuple[str, dict[str, Any]]:
        return same_as_dre(config.lambda4, config.mixup_alpha)
