"""SGDrop, Saliency Guided Dropout (Bertoin, Sanchez, Zouitine and Rachelson, "The Overfocusing
Bias of Convolutional Neural Networks: A Saliency-Guided Regularization Approach", 2024).

During training the most salient features of the last feature map are dropped before pooling, so
the classifier cannot rest on its most salient evidence:

    a = A * dy/dA  (Grad-CAM-style attribution of the true class y on `layer4`, per element),
    L = CE(head(pool(A * 1[a <= q_rho(a)])), y)

with q_rho the per-image rho-quantile of a. After global average pooling and a linear head, dy/dA
is W[y] / (h*w) at every position, so a needs no backward pass; it is detached, so the mask is a
constant of the step. Nothing is dropped at evaluation: the network itself is unchanged and the
loop evaluates `classifier(x)`.

Source and choices. Only the paper's abstract could be read here (arXiv 2409.17370: "attribution
methods on the feature map ... identify and then reduce the influence of the most salient features
during training"); no code of the authors was found. Hence, as our reading of it:
- what is dropped: elements (channel, position) of the last feature map (`layer4`), set to 0,
  without dropout's 1/(1-p) rescaling, since the mask is not random;
- attribution: activation times the gradient of the true class (the label is known in training,
  and the predicted class of an untrained network says little), as Grad-CAM's per-element product;
- rho = 0.9 (the top 10%): the ALIGN paper does not give SGDrop's setting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from align.methods.base import Batch, Method, MethodConfig, Models, register_method
from align.models.classifier import ResNetClassifier


class SgdropConfig(MethodConfig):
    rho: float = Field(0.9, gt=0, lt=1)
    """Features whose attribution lies above this per-image quantile are dropped (the top 10%);
    the ALIGN paper does not give SGDrop's setting."""


def salient_feature_keep(
    classifier: ResNetClassifier, features: Tensor, labels: Tensor, rho: float
) -> Tensor:
    """Which features (B,512,h,w) to keep: those whose true-class attribution is at most the
    per-image rho-quantile. Returns a float mask of 0s and 1s of the features' shape, detached."""
    with torch.no_grad(), torch.autocast(features.device.type, enabled=False):
        area = features.shape[2] * features.shape[3]
        gradient = classifier.head.weight[labels].float()[:, :, None, None] / area
        attribution = (features.float() * gradient).flatten(1)
        threshold = torch.quantile(attribution, rho, dim=1, keepdim=True)
        return (attribution <= threshold).view_as(features).to(features.dtype)


@register_method("sgdrop")
class SGDrop(Method):
    display_name = "SGDrop"
    Config = SgdropConfig

    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        classifier, labels = models.classifier, batch["label"]
        features = classifier.features(batch["image"])
        keep = salient_feature_keep(classifier, features, labels, self.config.rho)
        return {"ce": F.cross_entropy(classifier.classify_features(features * keep), labels)}
