"""Mixup (Zhang, Cisse, Dauphin and Lopez-Paz, ICLR 2018), the paper's `Mixup` baseline (which it
cites as the domain mixup of Xu et al., AAAI 2020):

    x~ = lam*x + (1-lam)*x[p],  L = lam*CE(f(x~), y) + (1-lam)*CE(f(x~), y[p]),  lam ~ Beta(a, a)

with p a random permutation of the batch and one lam per batch. DomainBed's Mixup mixes pairs of
training domains, so with the paper's single training domain it would be ERM; here every batch is
mixed with a shuffled copy of itself. lam and p come from the method's generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from align.methods.base import Batch, Method, MethodConfig, Models, register_method
from align.methods.regularizers import beta_sample


class MixupConfig(MethodConfig):
    alpha: float = Field(0.2, gt=0)
    """Beta(alpha, alpha) of the mixing weight (DomainBed's `mixup_alpha`)."""


@register_method("mixup")
class Mixup(Method):
    Config = MixupConfig

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        x, labels = batch["image"], batch["label"]
        weight = float(beta_sample(self.config.alpha, 1, self.generator))
        partners = torch.randperm(x.shape[0], generator=self.generator).to(x.device)
        logits = models.classifier(weight * x + (1 - weight) * x[partners])
        ce = weight * F.cross_entropy(logits, labels)
        return {"ce": ce + (1 - weight) * F.cross_entropy(logits, labels[partners])}
