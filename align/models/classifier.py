"""ResNet-18 classifier (torchvision) with a new head, exposing its `layer4` feature map.

The feature map is what Grad-CAM needs; `forward_features` returns it together with the logits from
one forward pass, so training losses on the explanation cost no extra forward.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import ResNet, ResNet18_Weights, resnet18

from align.errors import UserError


class ResNetClassifier(nn.Module):
    """ResNet-18 on ImageNet-normalised input (B,3,H,W) -> logits (B,num_classes)."""

    def __init__(self, num_classes: int, small_stem: bool = False, layer4_stride: int = 2) -> None:
        super().__init__()
        self.backbone: ResNet = resnet18(weights=None)
        if small_stem:
            # At 64 px the stock stem leaves a 2x2 layer4 map; a stride-1 first conv keeps 4x4.
            self.backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if layer4_stride == 1:
            # layer4 at layer3's resolution: twice the side of the Grad-CAM map for ~1.4x the
            # step time (bench/levers.py); the weights keep their shapes, ImageNet weights load.
            block = self.backbone.layer4[0]
            block.conv1.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        elif layer4_stride != 2:
            raise ValueError(f"layer4_stride must be 1 or 2, got {layer4_stride}")
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, num_classes)

    @property
    def head(self) -> nn.Linear:
        return self.backbone.fc

    def features(self, x: Tensor) -> Tensor:
        """The `layer4` activations (B,512,h,w)."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def classify_features(self, features: Tensor) -> Tensor:
        return self.head(torch.flatten(self.backbone.avgpool(features), 1))

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (B,C), layer4 features (B,512,h,w)) from one forward pass."""
        features = self.features(x)
        return self.classify_features(features), features

    def forward(self, x: Tensor) -> Tensor:
        return self.classify_features(self.features(x))


def create_classifier(
    num_classes: int, pretrained: str = "none", small_stem: bool = False, layer4_stride: int = 2
) -> ResNetClassifier:
    """`pretrained`: `none`, `imagenet` (torchvision's weights API) or a path to a state dict.

    Pretrained weights fill everything but the new head (and the first conv with a small stem).
    """
    model = ResNetClassifier(num_classes, small_stem=small_stem, layer4_stride=layer4_stride)
    if pretrained == "none":
        return model
    state = _imagenet_state() if pretrained == "imagenet" else _state_from_file(Path(pretrained))
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    own = model.backbone.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("layer4") for k in compatible):
        raise UserError(f"model.pretrained={pretrained}: no ResNet-18 weights found in it")
    model.backbone.load_state_dict(compatible, strict=False)
    return model


def _imagenet_state() -> dict[str, Tensor]:
    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as error:
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise UserError(
            f"could not download ImageNet weights ({error.__class__.__name__}); offline, put "
            f"{weights.url} at {target}, or set model.pretrained to a local file"
        ) from None


def _state_from_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise UserError(f"model.pretrained: {path} is not a file (use none, imagenet or a path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a corrupt file
        raise UserError(f"model.pretrained: cannot read {path}: {error}") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state
