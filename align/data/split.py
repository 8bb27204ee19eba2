"""Stage `split`: every domain split 6:2:2 per class into `<data.root>/splits/<dataset>.json`.

Every raw file is opened and fully decoded before it is admitted, so a zero-byte, truncated or
non-image file is skipped (and listed with its reason in `<dataset>.report.json`) instead of
crashing a training run hours later.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from tqdm import tqdm

from align.atomic import write_json_atomically
from align.config import Params
from align.data.images import decode_8bit
from align.data.layout import visible_files
from align.data.registry import DATASETS, mask_path_for, shortcut_mask_path_for
from align.errors import UserError
from align.stages import raw_dir, report_path, split_path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
T = TypeVar("T")


def read_split(params: Params, dataset: str) -> dict[str, Any]:
    """The split document of `dataset`; a UserError naming the stage to run when it is missing."""
    path = split_path(params, dataset)
    if not path.is_file():
        raise UserError(f"{path} is missing: run `align split --dataset {dataset}` (or dvc repro)")
    return json.loads(path.read_text())


def read_classes(params: Params, dataset: str) -> list[str]:
    """The class names of `dataset`, in label order, from its split file."""
    return read_split(params, dataset)["classes"]


def split_counts(n: int, ratios: Sequence[float]) -> tuple[int, int, int]:
    """How many of a class's `n` items go to train, val and test; see `split_stratified`."""
    if n <= 2:
        return ((0, 0, 0), (1, 0, 0), (1, 1, 0))[n]
    # Exact fractions: 0.6 * 5 must be 3, not 2.9999999999999996.
    exact = [Fraction(ratio).limit_denominator(10**6) * n for ratio in ratios]
    counts = [int(share) for share in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if counts[i] == 0:
            largest = max(range(3), key=lambda j: (counts[j], -j))
            counts[largest] -= 1
            counts[i] += 1
    return counts[0], counts[1], counts[2]


def split_stratified(
    items_per_class: Mapping[str, Sequence[T]], ratios: Sequence[float], rng: random.Random
) -> dict[str, list[T]]:
    """Split each class's items into train/val/test by `ratios` (train, val, test; sum 1).

    The splits are disjoint and together hold every item. Per class of `n` items the counts are:

    - n = 1: train only; n = 2: one train, one val; n = 3: one in each split;
    - n >= 4: the largest-remainder apportionment of `n * ratios` (ties go to the earlier split),
      after which a split left empty takes one item from the largest split, so every split of a
      class with n >= 3 holds at least one item.

    With 6:2:2 this gives n=4: 2/1/1, 5: 3/1/1, 6: 4/1/1, 7: 4/2/1, 8: 5/2/1, 9: 5/2/2, 10: 6/2/2.
    Which items go where is decided by `rng` alone: classes are visited in sorted order and each
    class's items are sorted before they are shuffled, so the input order does not matter.
    """
    splits: dict[str, list[T]] = {name: [] for name in SPLITS}
    for name in sorted(items_per_class):
        items = sorted(items_per_class[name])  # type: ignore[type-var]
        rng.shuffle(items)
        n_train, n_val, _ = split_counts(len(items), ratios)
        splits["train"] += items[:n_train]
        splits["val"] += items[n_train : n_train + n_val]
        splits["test"] += items[n_train + n_val :]
    return splits


def check_image(path: Path) -> str | None:
    """None if `path` decodes completely as an image, else the reason it cannot be used."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as image:
            # Decoding all of it finds truncation (Image.open reads only the header) and samples
            # the shard stage cannot store; a JPEG at 1/8 scale still reads every byte.
            decode_8bit(image, min_size=1).convert("RGB")
    # Plugins raise OSError, SyntaxError, struct.error, ... on bad input: anything is a reason.
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def check_sample(raw: Path, relpath: str, *mask_relpaths: str | None) -> str | None:
    """None if the image (and its masks, where the dataset has them) can be used, else why not."""
    problem = check_image(raw / relpath)
    if problem:
        return problem
    for mask_relpath in mask_relpaths:
        if mask_relpath is None:
            continue
        mask_file = raw / mask_relpath
        if not mask_file.is_file():
            return f"mask missing: {mask_relpath}"
        problem = check_image(mask_file)
        if problem:
            return f"mask unreadable: {problem}"
        with Image.open(raw / relpath) as image, Image.open(mask_file) as mask:
            if image.size != mask.size:
                return f"mask size {mask.size} differs from image size {image.size}"
    return None


def scan_domain(raw: Path, domain: str) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Files per class folder of one domain (relative to `raw`), and entries that are not in one.

    Hidden files and folders (names starting with a dot) are not part of the dataset and are
    passed over silently; class folders may nest sub-folders.
    """
    files: dict[str, list[str]] = {}
    stray: list[dict[str, str]] = []
    for entry in sorted(os.scandir(raw / domain), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            stray.append({"path": f"{domain}/{entry.name}", "reason": "not inside a class folder"})
            continue
        files[entry.name] = [
            path.relative_to(raw).as_posix() for path in visible_files(Path(entry.path))
        ]
    return files, stray


def sample_keys(relpaths: Sequence[str]) -> dict[str, str]:
    """A unique, dot-free key per `<domain>/<class>/<file>` path: `<class>_<stem>`.

    webdataset groups tar members by the part of the name before the first dot, so keys hold only
    [A-Za-z0-9_-]. Paths are visited in sorted order and a key that is already taken (e.g. a.jpg
    next to a.png) gets `-2`, `-3`, ... appended, so keys depend only on the set of files.
    """
    keys: dict[str, str] = {}
    taken: set[str] = set()
    for relpath in sorted(relpaths):
        within_domain = Path(*Path(relpath).parts[1:]).with_suffix("")
        base = re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(within_domain.parts))
        key, copy = base, 1
        while key in taken:
            copy += 1
            key = f"{base}-{copy}"
        taken.add(key)
        keys[relpath] = key
    return keys


def build_split(params: Params, dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The split document and its report (skipped files, counts); see the module docstring."""
    source = DATASETS.get(dataset)(params.dataset_config(dataset))
    raw = raw_dir(params, dataset)
    domains = source.domains()
    missing = [domain for domain in domains if not (raw / domain).is_dir()]
    if missing:
        raise UserError(
            f"{raw}: no folder for domain(s) {', '.join(missing)}; "
            f"run `align acquire --dataset {dataset}` (or `dvc repro`)"
        )

    scanned = {domain: scan_domain(raw, domain) for domain in domains}
    classes = sorted({name for files, _ in scanned.values() for name in files})
    skipped = [item for _, stray in scanned.values() for item in stray]

    def mask_of(relpath: str) -> str | None:
        if not source.has_masks:
            return None
        return mask_path_for(raw, relpath).relative_to(raw).as_posix()

    def shortcut_of(relpath: str) -> str | None:
        if not source.has_shortcut_masks:
            return None
        return shortcut_mask_path_for(raw, relpath).relative_to(raw).as_posix()

    candidates = [
        relpath for files, _ in scanned.values() for paths in files.values() for relpath in paths
    ]
    # Decoding is the slow part; PIL releases the GIL while it decodes, so threads scale.
    with ThreadPoolExecutor(max_workers=params.data.decode_workers) as pool:
        problems = list(
            tqdm(
                pool.map(
                    lambda relpath: check_sample(
                        raw, relpath, mask_of(relpath), shortcut_of(relpath)
                    ),
                    candidates,
                ),
                total=len(candidates),
                desc=f"checking {dataset} images",
                unit="img",
            )
        )
    unusable = {
        relpath: problem for relpath, problem in zip(candidates, problems, strict=True) if problem
    }
    skipped += [{"path": relpath, "reason": problem} for relpath, problem in unusable.items()]

    ratios = (params.data.split.train, params.data.split.val, params.data.split.test)
    document: dict[str, Any] = {
        "dataset": dataset,
        "classes": classes,
        "domains": {},
        "seed": params.data.split_seed,
        "ratios": dict(zip(SPLITS, ratios, strict=True)),
    }
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for domain, (files, _) in scanned.items():
        usable = {
            name: [relpath for relpath in paths if relpath not in unusable]
            for name, paths in files.items()
        }
        keys = sample_keys([relpath for paths in usable.values() for relpath in paths])
        # Seeding by (seed, domain) keeps a domain's split unchanged when another domain changes.
        rng = random.Random(f"{params.data.split_seed}:{domain}")
        splits = split_stratified(usable, ratios, rng)
        document["domains"][domain] = {
            split: [
                {
                    "key": keys[relpath],
                    "path": relpath,
                    "label": classes.index(Path(relpath).parts[1]),
                    "class": Path(relpath).parts[1],
                    "mask": mask_of(relpath),
                    "shortcut": shortcut_of(relpath),
                }
                for relpath in sorted(relpaths, key=keys.__getitem__)
            ]
            for split, relpaths in splits.items()
        }
        counts[domain] = {
            name: {split: sum(Path(p).parts[1] == name for p in splits[split]) for split in SPLITS}
            for name in sorted(usable)
        }
    report = {
        "dataset": dataset,
        "skipped": sorted(skipped, key=lambda item: item["path"]),
        "num_skipped": len(skipped),
        "counts": counts,
        "totals": split_totals(counts),
    }
    return document, report


def split_totals(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> dict[str, Any]:
    """Sample counts per domain and split, and over all domains; `all` sums the splits."""
    totals: dict[str, Any] = {}
    for domain, per_class in counts.items():
        totals[domain] = {split: sum(c[split] for c in per_class.values()) for split in SPLITS}
    totals["all"] = {split: sum(t[split] for t in totals.values()) for split in SPLITS}
    for entry in totals.values():
        entry["all"] = sum(entry[split] for split in SPLITS)
    return totals


def write_split(params: Params, dataset: str) -> tuple[Path, Path]:
    """Scan, check and split `dataset`'s raw images; returns (split JSON, report JSON)."""
    document, report = build_split(params, dataset)
    split_file, report_file = split_path(params, dataset), report_path(params, dataset)
    # The report comes first: it explains an empty domain, and a split without one is stale.
    write_json_atomically(report_file, report)
    empty = [domain for domain in document["domains"] if report["totals"][domain]["all"] == 0]
    if empty:
        raise UserError(
            f"{raw_dir(params, dataset)}: no readable images in domain(s) {', '.join(empty)}"
            f" (see {report_file})"
        )
    write_json_atomically(split_file, document)
    if report["skipped"]:
        log.warning("skipped %d unusable file(s); see %s", report["num_skipped"], report_file)
    log.info("split %s: %s -> %s", dataset, report["totals"]["all"], split_file)
    return split_file, report_file
