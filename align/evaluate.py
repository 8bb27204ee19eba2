"""The evaluate stage: one trained run on the test split of every domain.

On the run's own domain (in-distribution) it measures accuracy, AUC, ERASER sufficiency and
comprehensiveness of the predicted class's Grad-CAM, the quality of Grad-CAM, of the run's masker
and of SAM's masks against the ground truth (datasets with masks: IoU, Dice, pointing game, mean
inside and outside the object), the spread of each of these maps (every dataset), a uniform
reference (the all-ones map, the best any constant map scores against the ground truth), and the
accuracy with the background outside each mask blurred (Sec. 4.1, Fig. 2). On every other
domain (out of distribution, the paper's protocol: no retraining) it measures accuracy and AUC.
The record also names the training step of the checkpoint it evaluated (`selected_step`).
One JSON per (run, target domain): `<run>/eval/<target>.json`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from align.atomic import write_text_atomically
from align.config import Params
from align.data.loader import make_loader
from align.data.registry import DATASETS
from align.data.split import read_split
from align.device import pick_device
from align.errors import UserError
from align.explain import gradcam
from align.masks.sam import sam_mask_root, sam_masks_available
from align.metrics import (
    ClassificationAccumulator,
    FaithfulnessAccumulator,
    MaskQualityAccumulator,
    MaskSpreadAccumulator,
    faithfulness,
    fill_image,
    mask_quality,
)
from align.models.trained import TrainedRun, load_trained
from align.provenance import provenance
from align.runs import RUNS_ROOT, RunSpec

log = logging.getLogger(__name__)

EVAL_DIRNAME = "eval"
PARAMS_READ = ["evaluate", "data", "dataset", "model", "sam"]
"""What the evaluate stage's numbers depend on, besides the run itself (recorded as its hash)."""


def eval_path(run_dir: Path, target_domain: str) -> Path:
    return run_dir / EVAL_DIRNAME / f"{target_domain}.json"


def evaluate_run(
    params: Params, spec: RunSpec, runs_root: Path = RUNS_ROOT, show_progress: bool = True
) -> list[Path]:
    """Evaluate the trained run `spec` on every domain's test split; returns the JSON paths."""
    run_dir = spec.named_dir(runs_root)
    run = load_trained(run_dir, pick_device())
    domains = list(read_split(params, spec.dataset)["domains"])
    written = []
    for target in domains:
        result = evaluate_on_domain(params, spec, run, target, show_progress)
        path = eval_path(run_dir, target)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(result, indent=2) + "\n")
        written.append(path)
    # Domains no longer in the split leave no stale files that a report could pick up.
    for stale in set((run_dir / EVAL_DIRNAME).glob("*.json")) - set(written):
        stale.unlink()
    return written


def evaluate_on_domain(
    params: Params, spec: RunSpec, run: TrainedRun, target: str, show_progress: bool = True
) -> dict[str, Any]:
    in_distribution = target == spec.domain
    config = params.evaluate
    has_gt = DATASETS.get(spec.dataset).has_masks
    sam_ok, sam_reason = sam_masks_available(params, spec.dataset)
    measure_masks = in_distribution and has_gt
    device = next(run.classifier.parameters()).device

    classification = ClassificationAccumulator()
    faithful = FaithfulnessAccumulator()
    batches = test_batches(params, spec.dataset, target, with_gt=measure_masks)
    sam_batches = None
    if in_distribution and sam_ok:
        sam_batches = iter(test_batches(params, spec.dataset, target, sam=True))
    # The maps measured: Grad-CAM, the masker's, SAM's, and the all-ones reference (with GT).
    sources = ["gradcam"]
    if run.masker is not None:
        sources.append("masker")
    if sam_batches is not None:
        sources.append("sam")
    if has_gt:
        sources.append("uniform")
    quality = {name: MaskQualityAccumulator() for name in sources}
    spreads = {name: MaskSpreadAccumulator() for name in sources}
    blur_sources = ["none"] + (["gt"] if has_gt else [])
    blur_correct = dict.fromkeys(blur_sources, 0)
    sam_correct = total = 0
    description = f"evaluate {spec.method}/{spec.domain} on {target}"
    for batch in tqdm(batches, desc=description, disable=not show_progress, leave=False):
        x, labels = batch["image"].to(device), batch["label"].to(device)
        with torch.no_grad():
            logits = run.classifier(x)
        classification.update(logits, labels)
        total += len(labels)
        if not in_distribution:
            continue
        with torch.no_grad():
            maps, _ = gradcam(run.classifier, x)
        faithful.update(faithfulness(run.classifier, x, maps, config.fractions, config.fill,
                                     config.chunk_size))
        blur_correct["none"] += int((logits.argmax(1) == labels).sum())
        maps_of = {"gradcam": maps}
        if run.masker is not None:
            with torch.no_grad():
                maps_of["masker"] = run.masker(x)
        if sam_batches is not None:
            maps_of["sam"] = next(sam_batches)["mask"].to(device)
            sam_correct += correct_with_blurred_background(
                run.classifier, x, maps_of["sam"], labels
            )
        if has_gt:
            gt = batch["mask"].to(device)
            blur_correct["gt"] += correct_with_blurred_background(run.classifier, x, gt, labels)
            maps_of["uniform"] = torch.ones_like(gt)
        for name, source_maps in maps_of.items():
            spreads[name].update(source_maps)
            if has_gt:
                quality[name].update(mask_quality(source_maps, gt))

    summary = classification.summary()
    result: dict[str, Any] = {
        "dataset": spec.dataset,
        "train_domain": spec.domain,
        "method": spec.method,
        "seed": spec.seed,
        "target_domain": target,
        "in_distribution": in_distribution,
        "split": "test",
        "accuracy": summary.accuracy,
        "auc": None if summary.auc != summary.auc else summary.auc,
        "num_samples": summary.num_samples,
        "auc_note": summary.auc_note,
        "sufficiency": None,
        "comprehensiveness": None,
        "mask_quality": {},
        "background_blur": {},
        "unavailable": {},
        "selected_step": run.step,
        "fill": config.fill,
        "fractions": list(config.fractions),
        **provenance(params, PARAMS_READ),
    }
    if not in_distribution:
        return result
    aopc = faithful.summary()
    result["sufficiency"] = aopc["sufficiency"]
    result["comprehensiveness"] = aopc["comprehensiveness"]
    result["background_blur"] = {name: 100 * hits / total for name, hits in blur_correct.items()}
    # Spread needs no ground truth, so every dataset gets it; the rest only with masks.
    result["mask_quality"] = {
        name: {**(quality[name].summary() if has_gt else {}), **spreads[name].summary()}
        for name in sources
    }
    if not has_gt:
        result["unavailable"]["mask_quality"] = f"{spec.dataset} has no ground-truth masks"
    if sam_batches is not None:
        result["background_blur"]["sam"] = 100 * sam_correct / total
    else:
        result["unavailable"]["sam"] = sam_reason
    if run.masker is None:
        result["unavailable"]["masker"] = f"{spec.method} trains no masker"
    return result


def test_batches(
    params: Params, dataset: str, domain: str, *, with_gt: bool = False, sam: bool = False
):
    """The test split in a fixed order; SAM's masks come in the same order as the images."""
    return make_loader(
        params, dataset, domain, "test", train=False, batch_size=params.evaluate.batch_size,
        with_masks=with_gt or sam, mask_root=sam_mask_root(params, dataset) if sam else None,
    )


def blur_background(x: Tensor, masks: Tensor) -> Tensor:
    """Normalised images whose pixels outside `masks` (B,1,H,W in [0,1]) are Gaussian-blurred
    (Sec. 4.1's controlled background perturbation); the object is left untouched."""
    masks = masks.to(x.dtype)
    return x * masks + fill_image(x, "blur") * (1 - masks)


@torch.no_grad()
def correct_with_blurred_background(
    classifier: Callable[[Tensor], Tensor], x: Tensor, masks: Tensor, labels: Tensor
) -> int:
    return int((classifier(blur_background(x, masks)).argmax(1) == labels).sum())


@torch.no_grad()
def masker_blur_accuracy(
    params: Params, run: TrainedRun, masker_run: TrainedRun, dataset: str, domain: str
) -> float:
    """Accuracy (%) of `run`'s classifier on `domain`'s test split with the background outside
    `masker_run`'s masks blurred: Fig. 2's "task-driven masker" bars, for any method."""
    if masker_run.masker is None:
        raise UserError(f"{masker_run.spec} has no masker")
    device = next(run.classifier.parameters()).device
    correct = total = 0
    for batch in test_batches(params, dataset, domain):
        x, labels = batch["image"].to(device), batch["label"].to(device)
        correct += correct_with_blurred_background(run.classifier, x, masker_run.masker(x), labels)
        total += len(labels)
    return 100 * correct / total
