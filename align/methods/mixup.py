"""Mixup (Zhang, Cisse, Dauphin and Lopez-Paz, ICLR 2018), the paper's `Mixup` baseline (which it
cites as the domain mixup of Xu et al., AAAI 2020):

    x~ = lam*x + (1-lam)*x[p],  L = lam*CE(f(x~), y) + (1-lam)*CE(f(x~), y[p]),  lam ~ Beta(a, a)

with p a random permutation of the batch and one lam per batch. The paper's citation is among those
of DomainBed's inter-domain `Mixup` (Gulrajani and Lopez-Paz, ICLR 2021; `algorithms.py`
`Mixup.update`, which links Xu et al. and Yan et al. 2020), which mixes the minibatches of two
training domains position by position, one lam ~ Beta(0.2, 0.2) per pair, with the same two-term
label mixing. Xu et
al.'s own domain mixup mixes a labelled source with an unlabelled target domain for adaptation,
which has no counterpart when training on one domain. With the paper's single training domain
DomainBed's pairing mixes the batch with itself and is ERM exactly, so here the batch is mixed with
a shuffled copy of itself: Zhang et al.'s mixup, as their code pairs (a random permutation, which
can leave a sample with itself). lam and p come from the method's generator; alpha = 0.2 is
DomainBed's default (and Zhang et al.'s ImageNet setting).
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
    display_name = "Mixup"
    Config = MixupConfig

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        x, labels = batch["image"], batch["label"]
        weight = float(beta_sample(self.config.alpha, 1, self.generator))
        partners = torch.randperm(x.shape[0], generator=self.generator).to(x.device)
        logits = models.classifier(weight * x + (1 - weight) * x[partners])
        ce = weight * F.cross_entropy(logits, labels)
        return {"ce": ce + (1 - weight) * F.cross_entropy(logits, labels[partners])}
