"""IRM (Arjovsky, Bottou, Gulrajani and Lopez-Paz, "Invariant Risk Minimization", 2019): IRMv1.

    L = mean_e R^e + w(step) * mean_e || d/ds R^e(s * f(x)) at s = 1 ||^2

the risk of each environment e plus the squared gradient of that risk w.r.t. a dummy scale s on
the logits, which is zero when s = 1 is optimal for every environment at once. The squared gradient
is estimated without bias, as Arjovsky et al. propose and DomainBed implements (Gulrajani and
Lopez-Paz, ICLR 2021): the gradient on the even samples of an environment times that on its odd.
w(step) is 1 for the first `anneal_steps` steps and `penalty_weight` after (DomainBed's defaults:
1e2 after 500 steps).

Environments. The paper trains on one domain, where IRM has a single environment and its penalty
means little. Here each batch is split into two random halves, one environment each, drawn from
the method's generator; the penalty then asks the classifier's confidence (the scale of its logits)
to be optimal on both halves at once, so the method never reduces to ERM.

Not reproduced: DomainBed resets Adam when the penalty weight switches on, to forget moment
estimates of a 100 times smaller loss; the shared loop has no such hook, so Adam here adapts to the
new scale over its usual horizon (beta2 = 0.999).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from align.errors import UserError
from align.methods.base import Batch, Method, MethodConfig, Models, register_method

MIN_BATCH = 4
"""Two environments of two samples: the least the unbiased penalty can be estimated from."""


class IrmConfig(MethodConfig):
    penalty_weight: float = Field(100.0, gt=0)
    """Weight of the penalty once annealing is over (DomainBed's `irm_lambda`)."""
    anneal_steps: int = Field(500, ge=0)
    """Steps with penalty weight 1 before `penalty_weight` applies (DomainBed's default)."""


def irm_penalty(logits: Tensor, labels: Tensor) -> Tensor:
    """Unbiased IRMv1 penalty of one environment: logits (N,C), labels (N,), N >= 2 -> scalar.

    grad_s CE(s * logits[even]) * grad_s CE(s * logits[odd]), at s = 1, in the graph.
    """
    with torch.autocast(logits.device.type, enabled=False):
        scale = torch.ones((), device=logits.device, requires_grad=True)
        logits = logits.float()
        first = F.cross_entropy(logits[0::2] * scale, labels[0::2])
        second = F.cross_entropy(logits[1::2] * scale, labels[1::2])
        (grad_first,) = torch.autograd.grad(first, scale, create_graph=True)
        (grad_second,) = torch.autograd.grad(second, scale, create_graph=True)
    return grad_first * grad_second


def random_halves(batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices of two random halves of a batch (the second one larger by one if it is odd)."""
    order = torch.randperm(batch_size, generator=generator)
    return order[: batch_size // 2], order[batch_size // 2 :]


@register_method("irm")
class IRM(Method):
    Config = IrmConfig

    def penalty_weight(self, step: int) -> float:
        return self.config.penalty_weight if step >= self.config.anneal_steps else 1.0

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        x, labels = batch["image"], batch["label"]
        if x.shape[0] < MIN_BATCH:
            raise UserError(f"irm needs train.batch_size >= {MIN_BATCH} (two environments of two)")
        logits = models.classifier(x)
        risks, penalties = [], []
        for environment in random_halves(x.shape[0], self.generator):
            environment = environment.to(x.device)
            env_logits, env_labels = logits[environment], labels[environment]
            risks.append(F.cross_entropy(env_logits, env_labels))
            penalties.append(irm_penalty(env_logits, env_labels))
        return {
            "ce": torch.stack(risks).mean(),
            "penalty": self.penalty_weight(step) * torch.stack(penalties).mean(),
        }
