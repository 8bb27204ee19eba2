"""Loss terms shared by several methods: ALIGN's mixup explanation regulariser (Eq. 19) and the
explanation-guided classifier objective (Eq. 17) that ALIGN, its fixed-mask ablations and w/o EG
minimise, and the same-class partners of the mixup (Eq. 18) that DRE draws as well."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from align.explain import gradcam_from_features
from align.models.classifier import ResNetClassifier
from align.rows import rows


def same_class_partners(labels: Tensor, generator: torch.Generator) -> Tensor:
    """For each sample, the index of another sample of its class in the batch (B,), drawn uniformly
    among them from `generator`; a sample alone in its class is paired with itself.

    Pairing a sample with itself would make its Eq. 18 mixture the sample itself and its
    consistency term exactly zero, which a batch of 32 over 5 classes did about 15% of the time.
    """
    count = labels.shape[0]
    scores = torch.rand(count, count, generator=generator).to(labels.device)
    others = labels[:, None] == labels[None, :]
    others.fill_diagonal_(False)
    # Uniform scores in [0, 1): the argmax over the allowed entries is a uniform choice among them.
    partners = scores.masked_fill(~others, -1.0).argmax(dim=1)
    itself = torch.arange(count, device=labels.device)
    return torch.where(others.any(dim=1), partners, itself)


def beta_sample(alpha: float, count: int, generator: torch.Generator) -> Tensor:
    """`count` draws of Beta(alpha, alpha) (float32, CPU), reproducible from `generator`.

    torch's Beta sampler takes no generator, so the draw goes through a NumPy generator seeded
    from ours; the run's randomness then lives in one state that checkpoints save.
    """
    seed = int(torch.randint(2**62, (1,), generator=generator))
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=count)
    return torch.from_numpy(draws.astype(np.float32))


def explanation_mixup_loss(
    classifier: ResNetClassifier,
    x: Tensor,
    labels: Tensor,
    explanations: Tensor,
    alpha: float,
    generator: torch.Generator,
) -> Tensor:
    """Eq. 19 (Hong et al. 2026, after Li et al. 2023's DRE): explanation consistency under mixup.

    x (B,3,H,W) normalised; explanations (B,1,H,W): Grad-CAM of `labels` on x, in the graph.
    Mixes each sample with a same-class partner, `beta ~ Beta(alpha, alpha)` per sample (Eq. 18),
    and returns  mean|beta*Phi(x_i) + (1-beta)*Phi(x_j) - Phi(x~)| + CE(f(x~), y) + mean|Phi(x~)|.
    """
    partners = same_class_partners(labels, generator)
    weights = beta_sample(alpha, x.shape[0], generator).to(device=x.device, dtype=x.dtype)
    weights = weights.view(-1, 1, 1, 1)
    mixed = weights * x + (1 - weights) * x[partners]
    logits, features = classifier.forward_features(mixed)
    mixed_explanations = gradcam_from_features(classifier, features, labels, x.shape[2:])
    expected = weights * explanations + (1 - weights) * rows(explanations, partners)
    consistency = (expected - mixed_explanations).abs().mean()
    return consistency + F.cross_entropy(logits, labels) + mixed_explanations.abs().mean()


BCE_EPS = 1e-6


def guided_classifier_losses(
    classifier: ResNetClassifier,
    x: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    *,
    reg_weight: float,
    mixup_alpha: float,
    target_masks: Tensor | None = None,
    guidance_weight: float = 0.0,
) -> dict[str, Tensor]:
    """Eq. 17: `ce`, `egl` = guidance_weight * BCE(GradCAM_y(x), target_masks) (when a target is
    given and the weight is positive) and `reg` = reg_weight * Eq. 19 (when the weight is positive).

    x (B,3,H,W) normalised, labels (B,), target_masks (B,1,H,W) in [0,1]. The target is a constant:
    no gradient flows into whatever produced it. With no guidance this is w/o EG's objective, and it
    draws from `generator` exactly as ALIGN's classifier step does, so the two train alike.
    """
    logits, features = classifier.forward_features(x)
    explanations = gradcam_from_features(classifier, features, labels, x.shape[2:])
    terms = {"ce": F.cross_entropy(logits, labels)}
    if target_masks is not None and guidance_weight > 0:
        # Grad-CAM is exactly 0 wherever its ReLU cuts; clamping keeps log() finite so the logged
        # value means something (torch would clamp the log at -100). BCE refuses bf16 autocast.
        with torch.autocast(x.device.type, enabled=False):
            bounded = explanations.float().clamp(BCE_EPS, 1 - BCE_EPS)
            bce = F.binary_cross_entropy(bounded, target_masks.detach().float())
        terms["egl"] = guidance_weight * bce
    if reg_weight > 0:
        reg = explanation_mixup_loss(classifier, x, labels, explanations, mixup_alpha, generator)
        terms["reg"] = reg_weight * reg
    return terms
