"""What the case-study and mask figures show: the first test images of a domain with their masks,
and what a trained run makes of them (Grad-CAM of the true class, its probability, a masker's
masks). Anything missing comes back as a line saying why, for the figure to print in its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from align.config import Params
from align.data.loader import make_loader
from align.data.registry import DATASETS
from align.data.split import split_path
from align.data.transforms import denormalize
from align.errors import UserError
from align.explain import gradcam
from align.masks.layout import sam_mask_root, sam_masks_available
from align.models.trained import BEST_MODEL, load_trained


@dataclass
class TestImages:
    """The first `count` test images of a domain, in stored order (so the same every time)."""

    domain: str
    normalized: Tensor
    """(k,3,H,W), ImageNet-normalised: the networks' input."""
    labels: Tensor
    """(k,) class indices."""
    class_names: list[str]
    """The name of each image's class, (k,)."""
    gt_masks: Tensor | str
    """(k,1,H,W) in [0,1], or why the dataset has none."""
    sam_masks: Tensor | str
    """(k,1,H,W) in [0,1], or why SAM's masks are unavailable."""

    @property
    def pixels(self) -> Tensor:
        """(k,3,H,W) in [0,1], for display."""
        return denormalize(self.normalized).clamp(0, 1)


def class_names(params: Params, dataset: str) -> list[str]:
    path = split_path(params, dataset)
    if not path.is_file():
        raise UserError(f"{path} is missing: run `align split --dataset {dataset}` (or dvc repro)")
    return json.loads(path.read_text())["classes"]


def _first_batch(params: Params, domain: str, count: int, **masks) -> dict:
    loader = make_loader(
        params, params.dataset, domain, "test", train=False, batch_size=count, **masks
    )
    batch = next(iter(loader), None)
    if batch is None:
        raise UserError(f"the test split of {params.dataset}/{domain} is empty")
    return batch


def first_test_images(params: Params, domain: str, count: int) -> TestImages:
    """The first `count` images of `domain`'s test split with their ground-truth and SAM masks."""
    dataset = params.dataset
    has_gt = DATASETS.get(dataset).has_masks
    batch = _first_batch(params, domain, count, with_masks=has_gt)
    names = class_names(params, dataset)
    sam_ok, sam_reason = sam_masks_available(params, dataset)
    sam: Tensor | str = sam_reason
    if sam_ok:
        sam = _first_batch(
            params, domain, count, with_masks=True, mask_root=sam_mask_root(params, dataset)
        )["mask"]
    return TestImages(
        domain=domain,
        normalized=batch["image"],
        labels=batch["label"],
        class_names=[names[label] for label in batch["label"].tolist()],
        gt_masks=batch["mask"] if has_gt else f"{dataset} has no ground-truth masks",
        sam_masks=sam,
    )


@dataclass
class Explanation:
    """A run's Grad-CAM of the true class (k,1,H,W) in [0,1] and that class's probability (k,)."""

    maps: Tensor
    true_probability: Tensor


def _missing_model(run_dir: Path) -> str | None:
    path = run_dir / BEST_MODEL
    return None if path.is_file() else f"not trained: {path} missing"


@torch.no_grad()
def explain_true_class(
    run_dir: Path, images: TestImages, device: torch.device
) -> Explanation | str:
    """The run's Grad-CAM of each image's true class and its probability, or why there is none."""
    missing = _missing_model(run_dir)
    if missing:
        return missing
    run = load_trained(run_dir, device)
    x, labels = images.normalized.to(device), images.labels.to(device)
    maps, logits = gradcam(run.classifier, x, labels)
    probability = logits.float().softmax(1).gather(1, labels[:, None]).squeeze(1)
    return Explanation(maps.cpu(), probability.cpu())


@torch.no_grad()
def masker_masks(run_dir: Path, images: TestImages, device: torch.device) -> Tensor | str:
    """The run's masker's masks (k,1,H,W) in [0,1], or why there are none."""
    missing = _missing_model(run_dir)
    if missing:
        return missing
    run = load_trained(run_dir, device)
    if run.masker is None:
        return f"{run_dir} holds no masker"
    return run.masker(images.normalized.to(device)).float().cpu()
