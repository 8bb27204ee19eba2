"""The evaluate stage: one trained run on the test split of every domain.

On the run's own domain (in-distribution) it measures accuracy, AUC, ERASER sufficiency and
comprehensiveness of the predicted class's Grad-CAM, the quality of Grad-CAM, of the run's masker
and of SAM's masks against the ground truth (datasets with masks: IoU, Dice, pointing game, mean
inside and outside the object), the spread of each of these maps (every dataset), a uniform
reference (the all-ones map, the best any constant map scores against the ground truth), the
share of each map's mass on the object, on the shortcut and elsewhere (datasets with both masks;
`align.metrics.attention`), and the accuracy with the background outside each mask blurred
(Sec. 4.1, Fig. 2). On every other domain (out of distribution, the paper's protocol: no
retraining) it measures accuracy and AUC.
The record also names the training step of the checkpoint it evaluated (`selected_step`).
One JSON per (run, target domain): `<run>/eval/<target>.json`. Evaluations are stored by their
identity (`align.store`); the `eval/` folder is removed when an evaluation starts and appears
only complete, so a failed evaluation leaves no `eval/` that looks finished.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import astuple
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from align.atomic import write_json_atomically
from align.config import Params
from align.data.loader import make_loader
from align.data.registry import DATASETS
from align.data.shards import shards_dir
from align.data.split import read_split
from align.device import autocast, computes_in_bf16, pick_device
from align.digests import content_digest
from align.errors import UserError
from align.explain import gradcam
from align.identity import Identities
from align.masks.layout import sam_mask_root, sam_masks_available, status_file
from align.methods.m_gray import grayscale
from align.metrics import (
    AttentionAccumulator,
    ClassificationAccumulator,
    FaithfulnessAccumulator,
    MaskQualityAccumulator,
    MaskSpreadAccumulator,
    faithfulness,
    fill_image,
    mask_quality,
)
from align.models.trained import TrainedRun, load_trained
from align.provenance import git_commit
from align.runs import EVAL_DIRNAME, RUNS_ROOT, RunSpec, domain_shard_files, store_root
from align.store import Store, materialize, remove_tree

log = logging.getLogger(__name__)

RECORD_SPEC_FIELDS = ("dataset", "train_domain", "method", "seed")


def evaluation_identity(params: Params, spec: RunSpec, run: TrainedRun) -> dict[str, Any]:
    """The content identity of `spec`'s evaluation (with `key`): its job identity with the
    upstream jobs replaced by what it reads, the trained run's own key and a digest of every
    domain's test shards (and of SAM's masks of them, when they exist)."""
    domains = list(read_split(params, spec.dataset)["domains"])
    shards = [
        path for domain in domains
        for path in domain_shard_files(shards_dir(params, spec.dataset), domain, ("test",))
    ]
    masks = [status_file(params, spec.dataset)] + [
        path for domain in domains
        for path in domain_shard_files(sam_mask_root(params, spec.dataset), domain, ("test",))
    ]
    content = {
        "run": run.identity["key"],
        "shards": content_digest(shards),
        "sam_masks": content_digest(path for path in masks if path.is_file()),
    }
    return Identities(params).content_identity(spec.job("evaluate"), content)


def evaluate_run(
    params: Params, spec: RunSpec, runs_root: Path = RUNS_ROOT, show_progress: bool = True
) -> list[Path]:
    """Evaluate the trained run `spec` on every domain's test split; returns the JSON paths.

    Evaluations are stored by their identity (`align.store`): an identical one (the same run,
    data and settings, e.g. `align` with lambda3 = 0 and `wo_eg`) is linked, not computed again,
    and the folder `<run>/eval/` appears only complete.
    """
    run_dir = spec.named_dir(runs_root)
    run = load_trained(run_dir, pick_device())
    identity = evaluation_identity(params, spec, run)
    key = identity["key"]

    def build(staging: Path) -> None:
        # Until the new results are complete the run reads as not evaluated, so no report can
        # pick up records of an earlier evaluation.
        remove_tree(run_dir / EVAL_DIRNAME)
        targets = read_split(params, spec.dataset)["domains"]
        for number, target in enumerate(targets, 1):
            if not show_progress:  # a line per domain where there is no bar (DVC, Snakemake)
                log.info("%s: testing on %s (%d/%d)", spec.job("evaluate").name, target, number,
                         len(targets))
            result = evaluate_on_domain(params, spec, run, target, show_progress)
            result["identity_key"] = key
            write_json_atomically(staging / f"{target}.json", result, indent=2)
        write_json_atomically(staging / "identity.json", identity, indent=2)

    entry = Store(store_root(runs_root, "evaluate")).build(key, build)
    # The folder holds one record per target domain; the identity stays in the store.
    folder = materialize(entry, run_dir / EVAL_DIRNAME, rewrite=partial(name_record, spec),
                         skip=("identity.json",))
    return sorted(folder.glob("*.json"))


def name_record(spec: RunSpec, name: str, content: bytes) -> bytes:
    """A stored eval record with the spec of the run folder it is linked into (a stored
    evaluation can serve two names of one experiment)."""
    record = json.loads(content)
    record.update(dict(zip(RECORD_SPEC_FIELDS, astuple(spec), strict=True)))
    return (json.dumps(record, indent=2) + "\n").encode()


def evaluate_on_domain(
    params: Params, spec: RunSpec, run: TrainedRun, target: str, show_progress: bool = True
) -> dict[str, Any]:
    in_distribution = target == spec.domain
    config = params.evaluate
    has_gt = DATASETS.get(spec.dataset).has_masks
    sam_ok, sam_reason = sam_masks_available(params, spec.dataset)
    measure_masks = in_distribution and has_gt
    # Where each map sits (object, shortcut, elsewhere) needs the shortcut's pixels too.
    measure_attention = measure_masks and DATASETS.get(spec.dataset).has_shortcut_masks
    device = next(run.classifier.parameters()).device
    # Forward passes in the run's training precision (`model.precision`); the measures on their
    # outputs (probabilities, map rankings) in fp32.
    bf16 = computes_in_bf16(params.model.precision, device)

    classification = ClassificationAccumulator()
    faithful = FaithfulnessAccumulator()
    batches = test_batches(params, spec.dataset, target, with_gt=measure_masks,
                           with_shortcuts=measure_attention)
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
    # The fixed targets of the guided ablations (GT, Gray) are maps that can sit somewhere too.
    attention_sources = sources + ["gt", "gray"] if measure_attention else []
    attention = {name: AttentionAccumulator() for name in attention_sources}
    spreads = {name: MaskSpreadAccumulator() for name in sources}
    blur_sources = ["none"] + (["gt"] if has_gt else [])
    blur_correct = dict.fromkeys(blur_sources, 0)
    sam_correct = total = 0
    description = f"evaluate {spec.method}/{spec.domain} on {target}"
    for batch in tqdm(batches, desc=description, disable=not show_progress, leave=False):
        x, labels = batch["image"].to(device), batch["label"].to(device)
        with torch.no_grad(), autocast(device, bf16):
            logits = run.classifier(x).float()
        classification.update(logits, labels)
        total += len(labels)
        if not in_distribution:
            continue
        with torch.no_grad(), autocast(device, bf16):
            maps, _ = gradcam(run.classifier, x)
        maps = maps.float()
        with autocast(device, bf16):
            faithful.update(faithfulness(run.classifier, x, maps, config.fractions, config.fill,
                                         config.chunk_size))
        blur_correct["none"] += int((logits.argmax(1) == labels).sum())
        maps_of = {"gradcam": maps}
        if run.masker is not None:
            with torch.no_grad(), autocast(device, bf16):
                maps_of["masker"] = run.masker(x).float()
        if sam_batches is not None:
            maps_of["sam"] = next(sam_batches)["mask"].to(device)
            with autocast(device, bf16):
                sam_correct += correct_with_blurred_background(
                    run.classifier, x, maps_of["sam"], labels
                )
        if has_gt:
            gt = batch["mask"].to(device)
            with autocast(device, bf16):
                blur_correct["gt"] += correct_with_blurred_background(
                    run.classifier, x, gt, labels
                )
            maps_of["uniform"] = torch.ones_like(gt)
        for name, source_maps in maps_of.items():
            spreads[name].update(source_maps)
            if has_gt:
                quality[name].update(mask_quality(source_maps, gt))
        if measure_attention:
            maps_of.update(gt=gt, gray=grayscale(x).float())
            for name, accumulator in attention.items():
                accumulator.update(maps_of[name], gt, batch["shortcut"].to(device))

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
        "attention": {},
        "background_blur": {},
        "unavailable": {},
        "selected_step": run.step,
        "fill": config.fill,
        "fractions": list(config.fractions),
        "git_commit": git_commit(),
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
    result["attention"] = {name: accumulator.summary() for name, accumulator in attention.items()}
    if not has_gt:
        result["unavailable"]["mask_quality"] = f"{spec.dataset} has no ground-truth masks"
    if not measure_attention:
        result["unavailable"]["attention"] = f"{spec.dataset} has no object and shortcut masks"
    if sam_batches is not None:
        result["background_blur"]["sam"] = 100 * sam_correct / total
    else:
        result["unavailable"]["sam"] = sam_reason
    if run.masker is None:
        result["unavailable"]["masker"] = f"{spec.method} trains no masker"
    return result


def test_batches(
    params: Params, dataset: str, domain: str, *, with_gt: bool = False, sam: bool = False,
    with_shortcuts: bool = False,
):
    """The test split in a fixed order; SAM's masks come in the same order as the images."""
    return make_loader(
        params, dataset, domain, "test", train=False, batch_size=params.evaluate.batch_size,
        with_masks=with_gt or sam, mask_root=sam_mask_root(params, dataset) if sam else None,
        with_shortcuts=with_shortcuts,
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
