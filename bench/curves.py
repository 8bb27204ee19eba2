"""Learning curves of one run, to see what a method learns and when, not only what it ends with.

    python bench/curves.py --method m_gt [--seed 0] [--domain gradient] [--params params.yaml]
                           [--set KEY=VALUE ...] [--scratch /tmp/align-curves] [--threads 2]

At every validation step of the real training loop it records the training domain's validation
accuracy (what selects the checkpoint), the accuracy on every other domain's val split (out of
distribution; never used for selection), and, on a dataset with ground-truth masks, the
classifier's Grad-CAM of the true class inside and outside the object, and the share of its mass
on the object, on the shortcut and elsewhere (where the dataset has shortcut masks:
`align.metrics.attention`) and, for a method with a masker, the masker's IoU (threshold 0.5, in
%), mean and shares, on the training domain's val split.
`--set` overrides params with dotted keys and YAML values, e.g.
    --set datasets.synthetic.spurious_p=1.0 methods.m_gt.per_dataset.synthetic.lambda3=1
Data and the run live under the scratch folder (the workspace is not touched). Prints a JSON line
per validation to stderr as it goes, and the JSON summary with the whole curve to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from align.config import load_params, parse_params
from align.data.acquire import acquire_dataset
from align.data.loader import make_loader
from align.data.registry import DATASETS
from align.data.shards import write_shards
from align.data.split import read_split, write_split
from align.device import autocast
from align.explain import gradcam
from align.metrics.attention import REGIONS, AttentionAccumulator
from align.metrics.mask_quality import inside_outside, iou
from align.runs import RunSpec, run_identity
from align.train import Trainer

EVAL_BATCH = 100


def override(raw: dict[str, Any], assignment: str) -> None:
    """Set `raw[a][b][c] = value` from 'a.b.c=value' (the value parsed as YAML)."""
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def accuracy_on(trainer: Trainer, domain: str) -> float:
    classifier, params = trainer.models.classifier, trainer.params
    correct = total = 0
    with torch.no_grad(), autocast(trainer.device, trainer.bf16):
        for batch in make_loader(params, trainer.spec.dataset, domain, "val", train=False,
                                 batch_size=EVAL_BATCH):
            logits = classifier(batch["image"].to(trainer.device))
            correct += int((logits.argmax(1).cpu() == batch["label"]).sum())
            total += len(batch["label"])
    return correct / max(total, 1)


def _nanmean(values: list[torch.Tensor]) -> float:
    flat = torch.cat(values)
    return float(flat[~flat.isnan()].mean())


def explanation_quality(trainer: Trainer) -> dict[str, float]:
    """On the training domain's val split, against the ground-truth object: the classifier's
    Grad-CAM of the true class, mean inside and outside the object, and its shares (%) on the
    object, the shortcut and elsewhere; with a masker, its IoU (%), mean and shares."""
    models, spec = trainer.models, trainer.spec
    shortcuts = DATASETS.get(spec.dataset).has_shortcut_masks
    inside, outside, scores, means = [], [], [], []
    attention = {"cam": AttentionAccumulator(), "masker": AttentionAccumulator()}
    for batch in make_loader(trainer.params, spec.dataset, spec.domain, "val", train=False,
                             batch_size=EVAL_BATCH, with_masks=True, with_shortcuts=shortcuts):
        images, truth = batch["image"].to(trainer.device), batch["mask"]
        with autocast(trainer.device, trainer.bf16):
            maps, _ = gradcam(models.classifier, images, batch["label"].to(trainer.device))
        maps = maps.detach().float().cpu()
        cam_in, cam_out = inside_outside(maps, truth)
        inside.append(cam_in)
        outside.append(cam_out)
        if shortcuts:
            attention["cam"].update(maps, truth, batch["shortcut"])
        if models.masker is not None:
            with torch.no_grad():
                masks = models.masker(images).float().cpu()
            scores.append(iou(masks, truth))
            means.append(masks.mean(dim=(1, 2, 3)))
            if shortcuts:
                attention["masker"].update(masks, truth, batch["shortcut"])
    quality = {"cam_inside": round(_nanmean(inside), 3), "cam_outside": round(_nanmean(outside), 3)}
    names = ["cam"] + (["masker"] if models.masker is not None else [])
    for name in names if shortcuts else []:
        shares = attention[name].summary()
        quality.update({f"{name}_on_{region}": round(shares[region], 1) for region in REGIONS})
    if models.masker is not None:
        quality["masker_iou"] = round(100 * _nanmean(scores), 1)
        quality["masker_mean"] = round(float(torch.cat(means).mean()), 3)
    return quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domain", default=None, help="training domain; default: grid's first")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/align-curves"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = load_params(args.params).model_dump(mode="json")
    for assignment in args.set:
        override(raw, assignment)
    dataset = raw["dataset"]
    # Data depends on the dataset and data sections only: runs that differ elsewhere share it.
    data_key = hashlib.sha256(json.dumps([raw["data"], raw["datasets"][dataset]],
                                         sort_keys=True).encode()).hexdigest()[:12]
    raw["data"]["root"] = str(args.scratch / f"data-{data_key}")
    params = parse_params(raw)
    if not (params.data.root / "shards" / dataset).exists():
        acquire_dataset(params, dataset)
        write_split(params, dataset)
        write_shards(params, dataset)
    domain = args.domain or (params.grid.domains or [])[0]
    others = [d for d in read_split(params, dataset)["domains"] if d != domain]
    spec = RunSpec(dataset, domain, args.method, args.seed)
    folder = args.scratch / "runs" / f"{args.method}-seed{args.seed}-{time.time_ns()}"
    curve: list[dict[str, Any]] = []

    def record(trainer: Trainer, accuracy: float) -> None:
        was_training = {n: m.training for n, m in trainer.models.modules().items()}
        for module in trainer.models.modules().values():
            module.eval()
        ood = {d: round(accuracy_on(trainer, d), 3) for d in others}
        point = {"step": trainer.progress.step, "val_accuracy": round(accuracy, 3),
                 "ood_mean": round(sum(ood.values()) / max(len(ood), 1), 3), "ood": ood}
        if DATASETS.get(dataset).has_masks:
            point.update(explanation_quality(trainer))
        for name, module in trainer.models.modules().items():
            module.train(was_training[name])
        curve.append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)  # progress; stdout: the summary

    started = time.perf_counter()
    trainer = Trainer(params, spec, run_identity(params, spec), folder, show_progress=False,
                      on_validation=record)
    trainer.run()
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"method": args.method, "seed": args.seed, "domain": domain,
                      "overrides": args.set, "selected_step": trainer.progress.best_step,
                      "seconds": round(time.perf_counter() - started, 1), "curve": curve},
                     indent=2))


if __name__ == "__main__":
    main()
