"""IRM (Arjovsky, Bottou, Gulrajani and Lopez-Paz, "Invariant Risk Minimization", 2019): IRMv1.

    L = mean_e R^e + w(step) * mean_e || d/ds R^e(s * f(x)) at s = 1 ||^2

the risk of each environment e plus the squared gradient of that risk w.r.t. a dummy scale s on
the logits, which is zero when s = 1 is optimal for every environment at once. The squared gradient
is estimated without bias, as Arjovsky et al. propose and DomainBed implements (Gulrajani and
Lopez-Paz, ICLR 2021): the gradient on the even samples of an environment times that on its odd.
w(step) is 1 for the first `anneal_fraction` of the run's `train.steps` and `penalty_weight` after.
DomainBed's defaults are 1e2 after 500 steps (`irm_penalty_anneal_iters`) of its 5000: a tenth of
the run, which is our default fraction. A fixed 500 would never be reached in a default run
(`train.steps` is 150 in the embedded default), so the anneal is tied to the run's length instead.

Environments. The paper trains on one domain, where IRM has a single environment and its penalty
means little. Here each batch is split into two random halves, one environment each, drawn from
the method's generator; the penalty then asks the classifier's confidence (the scale of its logits)
to be optimal on both halves at once, so the method never reduces to ERM.

Adam reset. When the weight jumps, DomainBed's IRM replaces its Adam by a fresh one, since moment
estimates of a 100 times smaller loss would otherwise shape the first updates of the larger one.
A method does not own its optimiser, so it asks the shared loop through `resets_optimizer`: the
loop clears the classifier's Adam state (moments and step count) before that step, which is what a
fresh Adam with the same learning rate and weight decay is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from align.errors import UserError
from align.methods.base import Batch, Method, MethodConfig, Models, register_method
from align.rows import rows

MIN_BATCH = 4
"""Two environments of two samples: the least the unbiased penalty can be estimated from."""


class IrmConfig(MethodConfig):
    penalty_weight: float = Field(100.0, gt=0)
    """Weight of the penalty once annealing is over (DomainBed's `irm_lambda`)."""
    anneal_fraction: float = Field(0.1, ge=0, lt=1)
    """Fraction of `train.steps` trained with penalty weight 1 before `penalty_weight` applies
    (DomainBed: 500 of its 5000 steps)."""


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
    display_name = "IRM"
    Config = IrmConfig

    @property
    def anneal_steps(self) -> int:
        """The 0-based step from which the full penalty weight applies."""
        return int(self.config.anneal_fraction * self.total_steps)

    def penalty_weight(self, step: int) -> float:
        return self.config.penalty_weight if step >= self.anneal_steps else 1.0

    def resets_optimizer(self, phase: str, step: int) -> bool:
        return step == self.anneal_steps

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        x, labels = batch["image"], batch["label"]
        if x.shape[0] < MIN_BATCH:
            raise UserError(f"irm needs train.batch_size >= {MIN_BATCH} (two environments of two)")
        logits = models.classifier(x)
        risks, penalties = [], []
        for environment in random_halves(x.shape[0], self.generator):
            environment = environment.to(x.device)
            env_logits, env_labels = rows(logits, environment), labels[environment]
            risks.append(F.cross_entropy(env_logits, env_labels))
            penalties.append(irm_penalty(env_logits, env_labels))
        return {
            "ce": torch.stack(risks).mean(),
            "penalty": self.penalty_weight(step) * torch.stack(penalties).mean(),
        }
