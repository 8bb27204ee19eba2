"""Throughput of the shard reader against reading the original files, with train augmentation.

Builds a throwaway data root from the vlcs_mini photographs (repeated up to --images files in one
domain), splits and shards it at 64 and at 224 px (store_size = image_size), and times full train
epochs of `make_loader` against a map-style Dataset that opens each original file with PIL and
applies the same augmentation, through a DataLoader with the same workers. Prints JSON.

    .venv/bin/python bench/loader.py --images 1500 --workers 2 --repeats 3 [--source-size 512]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from align.config import Params, parse_params
from align.data.acquire import raw_dir
from align.data.loader import collate_samples, make_loader
from align.data.shards import write_shards
from align.data.split import write_split
from align.data.transforms import augment, augmentation_seed, sample_augmentation

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vlcs_mini" / "VLCS"
DATASET, DOMAIN = "vlcs", "bench"


class RawFiles(Dataset):
    """The train split read from the original files, with the reader's train augmentation."""

    def __init__(self, raw: Path, entries: list[dict[str, Any]], size: int) -> None:
        self.raw, self.entries, self.size = raw, entries, size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.entries[i]
        with Image.open(self.raw / entry["path"]) as decoded:
            image = decoded.convert("RGB")
        generator = torch.Generator().manual_seed(augmentation_seed(0, 0, entry["key"]))
        augmentation = sample_augmentation(image.height, image.width, generator)
        image, _ = augment(image, None, self.size, augmentation)
        return {"image": image, "label": entry["label"], "key": entry["key"]}


def build_raw(root: Path, images: int, source_size: int | None) -> None:
    """`images` copies of the fixture's photographs, cycled, in one domain's class folders.

    With `source_size`, each copy is upscaled to that many pixels square (JPEG quality 90), to
    stand for datasets whose photographs are larger than VLCS's 227 px.
    """
    sources = sorted(FIXTURE.glob("*/*/*.jpg"))
    for number in range(images):
        source = sources[number % len(sources)]
        target = root / "raw" / DATASET / DOMAIN / source.parent.name / f"{number:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        if source_size is None:
            shutil.copyfile(source, target)
            continue
        with Image.open(source) as image:
            larger = image.convert("RGB").resize((source_size, source_size))
        larger.save(target, quality=90)


def images_per_second(loader: DataLoader, repeats: int) -> float:
    """Best of `repeats` timed epochs, after one untimed epoch that starts the workers."""
    best = 0.0
    for epoch in range(repeats + 1):
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += batch["image"].shape[0]
        if epoch > 0:
            best = max(best, count / (time.perf_counter() - start))
    return best


def bench_size(base: Path, size: int, args: argparse.Namespace) -> dict[str, float]:
    root = base / str(size)
    (root / "raw").mkdir(parents=True)
    (root / "raw" / DATASET).symlink_to(base / "raw" / DATASET)
    params: Params = parse_params(
        {
            "data": {
                "root": str(root),
                "store_size": size,
                "image_size": size,
                "split": {"train": 0.8, "val": 0.1, "test": 0.1},
                "loader_workers": args.workers,
            },
            "datasets": {DATASET: {"domains": [DOMAIN]}},
        }
    )
    split_file, _ = write_split(params, DATASET)
    write_shards(params, DATASET)
    shards = make_loader(params, DATASET, DOMAIN, "train", train=True, batch_size=args.batch_size)
    entries = json.loads(split_file.read_text())["domains"][DOMAIN]["train"]
    raw = DataLoader(
        RawFiles(raw_dir(params, DATASET), entries, size),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        drop_last=True,
        collate_fn=collate_samples,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    shard_rate = images_per_second(shards, args.repeats)
    raw_rate = images_per_second(raw, args.repeats)
    return {
        "train_images": len(entries),
        "shard_images_per_s": round(shard_rate, 1),
        "raw_images_per_s": round(raw_rate, 1),
        "shard_over_raw": round(shard_rate / raw_rate, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1500, help="raw images to build")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for both")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs (best is reported)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument(
        "--source-size", type=int, help="upscale the raw photographs to this size (default: 227)"
    )
    args = parser.parse_args()
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="align-bench-") as tmp:
        base = Path(tmp)
        build_raw(base, args.images, args.source_size)
        results = {str(size): bench_size(base, size, args) for size in args.sizes}
    summary = {
        "images": args.images,
        "source_size": args.source_size or 227,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
