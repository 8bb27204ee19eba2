"""ERM: plain cross-entropy (Vapnik 1998), the backbone every other method starts from."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from align.methods.base import Batch, Method, Models, register_method


@register_method("erm")
class ERM(Method):
    display_name = "ERM"

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(models.classifier(batch["image"]), batch["label"])}
