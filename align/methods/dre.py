"""DRE, Distributionally Robust Explanations (Li, Qiao, Ma and Peng, "Are Data-driven Explanations
Robust against Out-of-distribution Data?", CVPR 2023), as its authors' code defines it
(github.com/tangli-udel/DRE: `dre/mixuploss.py` `MixupLoss`; the weights in `dre/train.py`):

    L = CE(f(x), y) + w_c * L_consistency + w_s * L_sparsity + w_m * CE(f(x~), y)

    x~ = beta * x_i + (1 - beta) * x_j,  y_i = y_j = y,  beta ~ Beta(0.2, 0.2) per sample
    L_consistency = mean |Phi(x~) - (beta * Phi(x_i) + (1 - beta) * Phi(x_j))|
    L_sparsity    = (mean |Phi(x)| + mean |Phi(x~)|) / 2

with Phi the class's Grad-CAM on `layer4` at the layer's resolution, before any ReLU, min-max
normalised per image (captum's `LayerGradCam`, then their `norm`), and w = (1, 0.5, 0.1). Each term
is averaged within each class and summed over the classes, divided by the number of classes (their
loop over classes; a class absent from the batch adds 0).

This is not ALIGN's Eq. 19, which is only "inspired by" DRE: Eq. 19 weighs its three terms alike
(lambda4 each), puts sparsity on the mixed explanation only, and explains with ReLU'd Grad-CAM. The
ALIGN paper's DRE row equals its w/o EG row cell for cell, so its DRE numbers come from its own
Eq. 17 with lambda3 = 0; that experiment is `wo_eg` here, and `dre` is the authors' loss.

Our choices where theirs do not carry over:
- Partners: they pair by a random permutation within each class of a batch pooled over their
  training domains; with the paper's one training domain the pairs lie within it. Partners are
  drawn as for Eq. 18 (`same_class_partners`): another sample of the class, never the sample
  itself while one exists (their permutation leaves about one sample per class with itself).
- Gradient: captum takes the Grad-CAM channel weights by a gradient outside the graph, so their
  explanation terms train the features but not the head; we keep that (the weights are detached).
- Sparsity: their code calls `torch.linalg.norm(ord=1, dim=(1, 2))` on (n,1,h,w) maps, a matrix
  norm (each column's largest value), not the L1 norm their paper writes. We take the L1 norm per
  position, mean |Phi|, which lies in [0, 1] as their value does, so the weight 0.5 keeps its scale.
- One forward pass for the clean and one for the mixed batch; theirs runs the network per class
  (and again inside each Grad-CAM), so its BatchNorm batch statistics are per class.
- The min-max normalisation adds 1e-7 to its denominator: a flat map gives 0, not NaN.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from align.explain import layer4_cam
from align.methods.base import Batch, Method, MethodConfig, Models, register_method
from align.methods.erm import ERM
from align.methods.regularizers import beta_sample, same_class_partners
from align.models.classifier import ResNetClassifier
from align.rows import rows

NORM_EPS = 1e-7


class DreConfig(MethodConfig):
    consistency_weight: float = Field(1.0, ge=0)
    """Weight of the explanation consistency term (the authors' `exp_weight`)."""
    sparsity_weight: float = Field(0.5, ge=0)
    """Weight of the explanation sparsity term (`sparse_weight`)."""
    mixed_ce_weight: float = Field(0.1, ge=0)
    """Weight of the cross-entropy on the mixed images (`mix_ce_weight`)."""
    mixup_alpha: float = Field(0.2, gt=0)
    """Beta(alpha, alpha) of the per-sample mixing weight (the authors' 0.2)."""


def dre_explanation(classifier: ResNetClassifier, features: Tensor, labels: Tensor) -> Tensor:
    """DRE's Phi: the `labels` class's `layer4` Grad-CAM (B,1,h,w) of features (B,512,h,w), before
    any ReLU, min-max normalised per image into [0, 1]; the head's weights are constants in it."""
    cam = layer4_cam(features, classifier.head.weight[labels].detach())
    low = cam.amin(dim=(2, 3), keepdim=True)
    high = cam.amax(dim=(2, 3), keepdim=True)
    return (cam - low) / (high - low + NORM_EPS)


def class_balanced_mean(values: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """values (B,) averaged within each class, then summed over classes and divided by
    `num_classes`: a class absent from the batch adds 0, as in the authors' loop."""
    members = F.one_hot(labels, num_classes).float()  # (B, classes): a sum that is deterministic
    sums = members.T @ values.float()
    return (sums / members.sum(0).clamp(min=1)).sum() / num_classes


@register_method("dre")
class DRE(Method):
    display_name = "DRE"
    Config = DreConfig

    @classmethod
    def canonical(cls, name: str, config: DreConfig) -> tuple[str, dict[str, Any]]:
        if not cls._regularised(config):  # CE alone, and the generator is never drawn from: ERM
            return ERM.canonical("erm", ERM.Config())
        return super().canonical(name, config)

    @staticmethod
    def _regularised(config: DreConfig) -> bool:
        return any((config.consistency_weight, config.sparsity_weight, config.mixed_ce_weight))

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        config, classifier = self.config, models.classifier
        x, labels = batch["image"], batch["label"]
        logits, features = classifier.forward_features(x)
        terms = {"ce": F.cross_entropy(logits, labels)}
        if not self._regularised(config):
            return terms
        partners = same_class_partners(labels, self.generator)
        beta = beta_sample(config.mixup_alpha, x.shape[0], self.generator)
        beta = beta.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        mixed_logits, mixed_features = classifier.forward_features(
            beta * x + (1 - beta) * x[partners]
        )
        explanation = dre_explanation(classifier, features, labels)
        mixed_explanation = dre_explanation(classifier, mixed_features, labels)
        expected = beta * explanation + (1 - beta) * rows(explanation, partners)
        # Normalised maps are non-negative: their L1 norm per position is their mean.
        per_sample = {
            "consistency": (
                config.consistency_weight, (mixed_explanation - expected).abs().mean((1, 2, 3))
            ),
            "sparsity": (
                config.sparsity_weight,
                (explanation.mean((1, 2, 3)) + mixed_explanation.mean((1, 2, 3))) / 2,
            ),
            "mixed_ce": (
                config.mixed_ce_weight, F.cross_entropy(mixed_logits, labels, reduction="none")
            ),
        }
        num_classes = logits.shape[1]
        for name, (weight, values) in per_sample.items():
            if weight > 0:
                terms[name] = weight * class_balanced_mean(values, labels, num_classes)
        return terms
