"""Stage `shard`: the split's images as webdataset tar shards, pre-resized to `data.store_size`.

Layout: `<data.root>/shards/<dataset>/<domain>/<split>-NNNNNN.tar` plus `<domain>/index.json`:

    {"dataset": str, "domain": str, "classes": [str, ...], "store_size": int, "has_masks": bool,
     "has_shortcut_masks": bool,
     "splits": {"train": {"samples": int, "shards": [{"name": "train-000000.tar", "samples": int}]},
                "val": {...}, "test": {...}}}

A sample holds `__key__`, `jpg` (or `png` for lossless sources), `cls` (class index), `json`
(`{"domain", "class", "path"}`) and, for datasets with masks, `mask.png` (8-bit, one channel,
the object) and, where the spurious cue is known, `shortcut.png` (its pixels).
Within a split, samples are stored in an order shuffled by the split's seed, so every shard mixes
the classes. Shards are written under a hidden temporary name and renamed when complete, and the
index is written last, so a reader that finds the index finds every shard it lists, complete.
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image
from tqdm import tqdm

from align.atomic import atomic_path, write_json_atomically
from align.config import Params
from align.data.images import decode_8bit
from align.data.registry import DATASETS
from align.data.split import SPLITS, split_path
from align.errors import UserError
from align.stages import raw_dir, shards_dir

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "TIFF", "PPM", "GIF"})
"""Sources in these formats are stored as PNG, so sharding adds no compression artefacts."""


def shard_remedy(dataset: str) -> str:
    """What to run when `dataset`'s shards are missing or damaged."""
    return f"run `align shard --dataset {dataset}` (or `dvc repro shard`)"


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def encode_sample(raw: Path, entry: dict[str, Any], domain: str, params: Params) -> dict[str, Any]:
    """One split entry as a webdataset sample: image (and mask) resized to store_size, encoded."""
    try:
        return _encode_sample(raw, entry, domain, params)
    except (OSError, ValueError) as error:  # ValueError: samples decode_8bit cannot scale
        raise UserError(
            f"{raw / entry['path']}: cannot be read ({error}); the raw folder changed after the"
            f" split, so rerun `align split --dataset {raw.name}` (or `dvc repro`)"
        ) from None


def _encode_sample(raw: Path, entry: dict[str, Any], domain: str, params: Params) -> dict[str, Any]:
    size = (params.data.store_size, params.data.store_size)
    with Image.open(raw / entry["path"]) as source:
        lossless = source.format in LOSSLESS_FORMATS
        decoded = decode_8bit(source, min_size=params.data.store_size)
        # A square resize, as DomainBed's Resize((s, s)); PIL's bilinear filter antialiases.
        image = decoded.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    encoded = io.BytesIO()
    if lossless:
        image.save(encoded, format="PNG")
    else:
        image.save(encoded, format="JPEG", quality=params.data.jpeg_quality)
    sample = {
        "__key__": entry["key"],
        "png" if lossless else "jpg": encoded.getvalue(),
        "cls": entry["label"],
        "json": {"domain": domain, "class": entry["class"], "path": entry["path"]},
    }
    # Split files written before shortcut masks existed have no "shortcut" entry.
    for field, name in (("mask", "mask.png"), ("shortcut", "shortcut.png")):
        if entry.get(field) is not None:
            sample[name] = _encode_mask(raw / entry[field], size)
    return sample


def _encode_mask(path: Path, size: tuple[int, int]) -> bytes:
    with Image.open(path) as source:
        # NEAREST keeps a label mask's values; "L" makes it one 8-bit channel.
        mask = decode_8bit(source).convert("L").resize(size, Image.Resampling.NEAREST)
    encoded = io.BytesIO()
    mask.save(encoded, format="PNG")
    return encoded.getvalue()


def write_shard(path: Path, samples: Iterable[dict[str, Any]]) -> None:
    """Write `samples` to the tar `path` via a hidden temporary file renamed when complete."""
    with (
        atomic_path(path) as partial,
        open(partial, "wb") as stream,
        wds.TarWriter(stream, mtime=0) as writer,
    ):
        # mtime=0: the same samples give byte-identical shards, so DVC sees no change.
        for sample in samples:
            writer.write(sample)


def shard_index(
    dataset: str, domain: str, classes: list[str], params: Params, shards: dict[str, list[int]]
) -> dict[str, Any]:
    """The index of one domain; `shards` holds the sample count of each shard, per split."""
    return {
        "dataset": dataset,
        "domain": domain,
        "classes": classes,
        "store_size": params.data.store_size,
        "has_masks": DATASETS.get(dataset).has_masks,
        "has_shortcut_masks": DATASETS.get(dataset).has_shortcut_masks,
        "splits": {
            split: {
                "samples": sum(counts),
                "shards": [
                    {"name": shard_name(split, number), "samples": count}
                    for number, count in enumerate(counts)
                ],
            }
            for split, counts in shards.items()
        },
    }


def write_shards(params: Params, dataset: str) -> Path:
    """Shard every domain and split listed in `dataset`'s split file; returns its shard folder."""
    split_file = split_path(params, dataset)
    if not split_file.is_file():
        raise UserError(
            f"{split_file}: no split file; run `align split --dataset {dataset}` (or `dvc repro`)"
        )
    document = json.loads(split_file.read_text())
    raw = raw_dir(params, dataset)
    root = shards_dir(params, dataset)
    limit = params.data.shard_max_samples

    # The plan: the entries to encode in writing order, and how many of them each shard takes.
    work: list[tuple[dict[str, Any], str]] = []
    sizes: dict[str, dict[str, list[int]]] = {}
    for domain, splits in document["domains"].items():
        folder = root / domain
        folder.mkdir(parents=True, exist_ok=True)
        # Drop the old index first: until the new one is written, the domain reads as missing.
        (folder / INDEX_NAME).unlink(missing_ok=True)
        for stale in [*folder.glob("*.tar"), *folder.glob(".*.tar.tmp")]:
            stale.unlink()
        sizes[domain] = {}
        for split in SPLITS:
            # Classes mixed within every shard, so a reader that shuffles only within a buffer
            # of nearby samples still sees all classes; seeded, so shards are reproducible.
            entries = sorted(splits[split], key=lambda entry: entry["key"])
            random.Random(f"{document['seed']}:{domain}:{split}").shuffle(entries)
            sizes[domain][split] = [
                min(limit, len(entries) - start) for start in range(0, len(entries), limit)
            ]
            work += [(entry, domain) for entry in entries]
    shards = [
        (root / domain / shard_name(split, number), count)
        for domain, per_split in sizes.items()
        for split, counts in per_split.items()
        for number, count in enumerate(counts)
    ]

    # Encoding is the slow part and PIL does it without holding the GIL, so a thread pool encodes
    # ahead (in order) while this thread writes the tar files one after another.
    pool = ThreadPoolExecutor(max_workers=params.data.decode_workers)
    try:
        encoded = iter(pool.map(lambda item: encode_sample(raw, item[0], item[1], params), work))
        with tqdm(total=len(work), desc=f"sharding {dataset}", unit="img") as progress:
            for path, count in shards:
                write_shard(path, islice(encoded, count))
                progress.update(count)
    finally:
        # On an error or Ctrl-C, do not wait for the remaining images to be encoded.
        pool.shutdown(cancel_futures=True)

    for domain in document["domains"]:
        index = shard_index(dataset, domain, document["classes"], params, sizes[domain])
        write_json_atomically(root / domain / INDEX_NAME, index)
    log.info(
        "sharded %s: %d samples into %d shards under %s", dataset, len(work), len(shards), root
    )
    return root
