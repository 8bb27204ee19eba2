"""SGT, Saliency Guided Training (Ismail, Corrada Bravo and Feizi, NeurIPS 2021, Alg. 1):

    S = d f_y(x) / dx,   x~ = x with its k lowest-saliency features replaced by random values,
    L = CE(f(x), y) + lambda * KL(softmax f(x) || softmax f(x~))

Each choice below follows the authors' code (github.com/ayaabdelsalam91/saliency_guided_training,
`Scripts/interpretable.py` `train` and `Scripts/Helper.py` `get_SingleMask`/`fill_SingleMask`, the
path it takes for colour images):
- KL direction: clean first, as Alg. 1 writes it and as the code computes it (`KLDivLoss` of the
  masked log-probabilities against the clean probabilities); gradients flow through both.
- Saliency: the gradient of the true class's *logit* (captum `Saliency` on the logits, target = y),
  taken in eval mode (`model.eval()` before the saliency pass, `model.train()` after), so BatchNorm
  uses its running statistics, each image's gradient is its own, and the running statistics are not
  updated twice; then the CE and KL forward passes run in training mode.
- Per pixel: the signed gradient averaged over the colour channels (`.mean(1)`); the
  max(1, int(k * H * W)) lowest pixels are masked in all channels at once. Sign: the signed mean is
  sorted (Alg. 1 sorts the gradient itself; the code's `--abs` flag is off by default);
  `absolute_saliency` ranks by its absolute value instead.
- Replacement (`--RandomMasking`, the random mask of Alg. 1): uniform in [min, max] of that channel
  of that image, drawn independently per value, here from the method's generator.
- k: the ALIGN paper does not give SGT's; 0.5 is the authors' README setting (their CIFAR script
  defaults to 0.1). lambda: the code adds the KL unweighted (1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from align.methods.base import Batch, Method, MethodConfig, Models, register_method


class SgtConfig(MethodConfig):
    masked_fraction: float = Field(0.5, gt=0, lt=1)
    """k: the fraction of pixels (all their channels) masked per image."""
    kl_weight: float = Field(1.0, ge=0)
    """lambda: weight of KL(f(x) || f(x masked)); the authors' code uses 1."""
    absolute_saliency: bool = False
    """Rank pixels by |mean gradient| rather than by the signed mean (the authors' `--abs`)."""


def pixel_saliency(classifier: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """d logit_y / dx averaged over channels (B,H,W), computed in eval mode and detached.

    x (B,C,H,W) normalised, labels (B,). The classifier's train/eval mode is restored.
    """
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.enable_grad():
            inputs = x.detach().requires_grad_()
            true_class = classifier(inputs).gather(1, labels[:, None]).sum()
            (gradient,) = torch.autograd.grad(true_class, inputs)
    finally:
        classifier.train(was_training)
    return gradient.mean(dim=1)


def mask_lowest_saliency(
    x: Tensor, saliency: Tensor, fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Replace all channels of the `fraction` lowest-saliency pixels of each image by random values.

    x (B,C,H,W), saliency (B,H,W). Returns (masked images (B,C,H,W), masked positions bool
    (B,C,H,W)). Exactly max(1, int(fraction * H * W)) pixels per image; each replacement is uniform
    in [min, max] of its channel in its image.
    """
    flat = saliency.flatten(1)
    count = max(1, int(fraction * flat.shape[1]))
    lowest = flat.topk(count, dim=1, largest=False).indices
    pixels = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
    masked = pixels.view(x.shape[0], 1, *x.shape[2:]).expand_as(x)
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    uniform = torch.rand(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    return torch.where(masked, low + (high - low) * uniform, x), masked


def clean_to_masked_kl(clean_logits: Tensor, masked_logits: Tensor) -> Tensor:
    """KL(softmax clean || softmax masked), summed over classes and averaged over the batch."""
    with torch.autocast(clean_logits.device.type, enabled=False):
        # kl_div(input, target) is KL(target || input): the clean prediction is the target.
        return F.kl_div(
            F.log_softmax(masked_logits.float(), dim=1), F.log_softmax(clean_logits.float(), dim=1),
            reduction="batchmean", log_target=True,
        )


@register_method("sgt")
class SGT(Method):
    display_name = "SGT"
    Config = SgtConfig

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        x, labels = batch["image"], batch["label"]
        classifier = models.classifier
        saliency = pixel_saliency(classifier, x, labels)
        if self.config.absolute_saliency:
            saliency = saliency.abs()
        masked, _ = mask_lowest_saliency(
            x.detach(), saliency, self.config.masked_fraction, self.generator
        )
        logits = classifier(x)
        kl = clean_to_masked_kl(logits, classifier(masked))
        return {"ce": F.cross_entropy(logits, labels), "kl": self.config.kl_weight * kl}
