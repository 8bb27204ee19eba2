"""The shard reader: one domain's split as a torch DataLoader of dict batches.

Order and randomness. The n-th iteration over a loader made with `epoch=e` is epoch e + n. Its
sample order is a full permutation of the split seeded by (seed, epoch) (train) or the stored order
(eval); batch b holds positions [b * B, (b + 1) * B) of that order. Worker w of k owns the batches
b with b % k == w; the DataLoader takes batches from its workers round-robin, so it yields batch
0, 1, 2, ... whatever k is. Each sample's augmentation is drawn from a generator seeded by
(seed, epoch, key). Together: the same batches, in the same order, augmented the same way, for any
worker count, and a run that resumes at epoch e sees what an uninterrupted run would have seen.

Each worker reads the split's shards once, through a webdataset pipeline, and keeps the samples
encoded in memory (the shards' size: ~3 MB per 1,000 images at 64 px, ~20 MB at 224 px); every
epoch it decodes and transforms only the samples of its own batches. Samples go to workers by
batch, not by shard (`wds.split_by_worker`), because most splits here fit into one or two shards,
which would leave the other workers idle, and would make the order depend on the worker count.
Keeping them rather than re-reading the shards every epoch matters: with a full permutation, a
worker would have to read nearly the whole split before its first batch, every epoch.

Masks come from the image shards' `mask.png` (datasets with ground-truth masks) or, given
`mask_root`, from a second shard tree `<mask_root>/<domain>/<split>-NNNNNN.tar` with the same shard
names and the same samples in the same order (as the SAM stage writes them, one mask shard per image
shard), read in lockstep with the image shards; the keys are checked to agree.

Damage. Each shard must hold as many complete samples as the index lists for it, and every sample
must decode; a truncated or damaged shard is a UserError naming the shard and the stage that
rewrites it. In a DataLoader worker that error travels to the caller as a batch holding only its
message (`WORKER_ERROR`), which `ShardLoader` raises as the same one line, where torch would wrap it
in the worker's traceback.
"""

from __future__ import annotations

import json
import random
import re
import tarfile
from collections.abc import Iterator
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from align.config import Params
from align.data.registry import DATASETS
from align.data.shards import INDEX_NAME, shard_remedy, shards_dir
from align.data.split import SPLITS
from align.data.transforms import (
    JITTER,
    augment,
    augmentation_seed,
    resize_for_eval,
    sample_augmentation,
    to_normalized,
    to_pixels,
)
from align.errors import UserError
from align.threads import loader_workers

Sample = dict[str, Any]
IMAGE_PARTS = (("jpg", "png"), ("cls",))
MASK_PARTS = (("mask.png",),)
"""What every sample of an image shard, and of a mask shard, holds: one field of each group."""
SHORTCUT_PARTS = (("shortcut.png",),)
"""What the samples of a dataset with shortcut masks hold besides."""
WORKER_ERROR = "__error__"
"""The key of the batch by which a worker hands a UserError to `ShardLoader`."""


def read_index(folder: Path, domain: str, remedy: str) -> dict[str, Any]:
    """`<folder>/<domain>/index.json`, after checking that the shards it lists exist.

    A missing index or shard is a UserError that ends with `remedy` (the command that writes them).
    """
    index_file = folder / domain / INDEX_NAME
    if not index_file.is_file():
        raise UserError(f"{index_file}: no shards of domain {domain!r}; {remedy}")
    index = json.loads(index_file.read_text())
    missing = [
        shard["name"]
        for split in index["splits"].values()
        for shard in split["shards"]
        if not (folder / domain / shard["name"]).is_file()
    ]
    if missing:
        raise UserError(
            f"{folder / domain}: shards listed in {INDEX_NAME} are missing "
            f"({', '.join(missing)}); {remedy}"
        )
    return index


class ShardStream(IterableDataset):
    """Batches of one split read from webdataset shards; see the module docstring for the order.

    Yields dicts: `image` float32 (B, 3, S, S) ImageNet-normalised, `label` int64 (B,), `key`
    list[str], with masks `mask` float32 (B, 1, S, S) in [0, 1], and with shortcut masks
    `shortcut` of the same shape (evaluation only: the train transform moves one mask).
    """

    def __init__(
        self,
        shards: list[tuple[str, int]],
        *,
        mask_shards: list[str] | None,
        with_masks: bool,
        train: bool,
        batch_size: int,
        image_size: int,
        seed: int,
        epoch: int,
        remedy: str,
        mask_remedy: str,
        hue_jitter: float = JITTER,
        with_shortcuts: bool = False,
    ) -> None:
        """`shards`: (path, sample count listed in the index) of each shard, in order; `remedy`
        (and `mask_remedy`): what to run when one of them is damaged."""
        super().__init__()
        self.shards = shards
        self.num_samples = sum(count for _, count in shards)
        self.mask_shards = mask_shards
        self.remedy = remedy
        self.mask_remedy = mask_remedy
        self.with_masks = with_masks
        if with_shortcuts and train:
            raise ValueError("shortcut masks are read for evaluation only (train=False)")
        self.with_shortcuts = with_shortcuts
        self.train = train
        self.batch_size = batch_size
        self.image_size = image_size
        self.seed = seed
        self.hue_jitter = hue_jitter
        self.first_epoch = epoch
        self.iterations = 0
        """This copy's passes so far; each (persistent) worker's copy counts the same."""
        self._samples: list[Sample] | None = None

    def __len__(self) -> int:
        """Batches per epoch: train drops the last partial batch, eval keeps it."""
        if self.train:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[Sample]:
        epoch = self.first_epoch + self.iterations
        self.iterations += 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[Sample]:
        try:
            yield from self._pipeline(epoch)
        except UserError as error:
            if get_worker_info() is None:
                raise
            yield {WORKER_ERROR: str(error)}

    def _pipeline(self, epoch: int) -> Iterator[Sample]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)

        order = list(range(self.num_samples))
        if self.train:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        kept = len(self) * self.batch_size if self.train else self.num_samples
        mine = [p for p in range(kept) if (p // self.batch_size) % num_workers == worker_id]
        samples = self._stored_samples()
        chosen = [samples[order[p]] for p in mine]
        pipeline = wds.DataPipeline(
            lambda: iter(chosen),  # a list given directly would be taken for a list of stages
            wds.map(partial(self._transform, epoch=epoch)),
            wds.batched(self.batch_size, collation_fn=collate_samples, partial=not self.train),
        )
        return iter(pipeline)

    def _stored_samples(self) -> list[Sample]:
        """The split's samples, encoded, in stored order; read from the shards on first use."""
        if self._samples is None:
            own_masks = self.with_masks and self.mask_shards is None
            parts = (IMAGE_PARTS + (MASK_PARTS if own_masks else ())
                     + (SHORTCUT_PARTS if self.with_shortcuts else ()))
            samples: list[Sample] = []
            for number, (path, count) in enumerate(self.shards):
                found = read_shard(path, count, parts, self.remedy)
                if self.mask_shards is not None:
                    masks = read_shard(self.mask_shards[number], count, MASK_PARTS,
                                        self.mask_remedy)
                    found = _join_masks(found, masks)
                samples += found
            self._samples = samples
        return self._samples

    def _transform(self, sample: Sample, epoch: int) -> Sample:
        """Decode one sample and apply the train or eval transform (PIL images, S x S)."""
        image_bytes = sample["jpg"] if "jpg" in sample else sample["png"]
        image = decode_image(image_bytes, "RGB", sample["__url__"], sample["__key__"], self.remedy)
        mask = None
        if self.with_masks:
            joined = "__mask_url__" in sample  # from a mask shard, not the image shard
            mask = decode_image(
                sample["mask.png"], "L", sample["__mask_url__" if joined else "__url__"],
                sample["__key__"], self.mask_remedy if joined else self.remedy,
            )
        if self.train:
            generator = torch.Generator().manual_seed(
                augmentation_seed(self.seed, epoch, sample["__key__"])
            )
            augmentation = sample_augmentation(
                image.height, image.width, generator, self.hue_jitter
            )
            image, mask = augment(image, mask, self.image_size, augmentation)
        else:
            image, mask = resize_for_eval(image, mask, self.image_size)
        transformed = {"image": image, "label": int(sample["cls"]), "key": sample["__key__"]}
        if mask is not None:
            transformed["mask"] = mask
        if self.with_shortcuts:
            shortcut = decode_image(sample["shortcut.png"], "L", sample["__url__"],
                                    sample["__key__"], self.remedy)
            transformed["shortcut"] = resize_for_eval(shortcut, None, self.image_size)[0]
        return transformed


def read_shard(
    path: str, count: int, parts: tuple[tuple[str, ...], ...], remedy: str
) -> list[Sample]:
    """The `count` samples of one shard in stored order, each holding one field of every group
    in `parts` (e.g. `IMAGE_PARTS`), and no other field but `__key__` and `__url__`."""
    fields = {name for group in parts for name in group}
    try:
        samples = list(wds.WebDataset(
            path,
            shardshuffle=False,  # the epoch order is made later, identically in every worker
            nodesplitter=None,
            workersplitter=None,  # every worker reads every shard and decodes its own batches
            empty_check=False,
            select_files=lambda name: name.split(".", 1)[-1] in fields,
        ))
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        raise UserError(
            f"{path}: truncated or damaged shard (unreadable: {type(error).__name__}); {remedy}"
        ) from None
    complete = [s for s in samples if all(any(f in s for f in group) for group in parts)]
    if len(complete) != count or len(samples) != count:
        raise UserError(
            f"{path}: truncated or damaged shard ({len(complete)} complete samples of "
            f"{len(samples)} where {INDEX_NAME} lists {count}); {remedy}"
        )
    return samples


def decode_image(data: bytes, mode: str, shard: str, key: str, remedy: str) -> Image.Image:
    """The encoded image `data` of sample `key` as a PIL image of `mode`."""
    try:
        return Image.open(BytesIO(data)).convert(mode)
    # PIL raises OSError, SyntaxError, ValueError, ... on damaged bytes: each means damage here.
    except Exception as error:
        reason = re.sub(r" ?<_io\.BytesIO object at \w+>", "", str(error))
        raise UserError(
            f"{shard}: sample {key!r} cannot be decoded ({type(error).__name__}: {reason});"
            f" {remedy}"
        ) from None


def _join_masks(samples: list[Sample], masks: list[Sample]) -> list[Sample]:
    """Add each sample's `mask.png` from the matching mask shard, which holds the same keys."""
    for sample, mask in zip(samples, masks, strict=True):
        if mask["__key__"] != sample["__key__"]:
            raise UserError(
                f"mask shards do not line up with the image shards: {mask['__key__']!r} where "
                f"{sample['__key__']!r} was expected (rewrite the masks after resharding)"
            )
    return [
        {**sample, "mask.png": mask["mask.png"], "__mask_url__": mask["__url__"]}
        for sample, mask in zip(samples, masks, strict=True)
    ]


def collate_samples(samples: list[Sample]) -> Sample:
    """Transformed samples (PIL `image`, optional PIL `mask`, int `label`, str `key`) as a batch.

    Returns `image` float32 (B, 3, S, S) ImageNet-normalised, `label` int64 (B,), `key` list[str]
    and, when the samples have them, `mask` and `shortcut` float32 (B, 1, S, S) in [0, 1].
    """
    batch = {
        "image": to_normalized([s["image"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
        "key": [s["key"] for s in samples],
    }
    for name in ("mask", "shortcut"):
        if name in samples[0]:
            batch[name] = to_pixels([s[name] for s in samples])
    return batch


class ShardLoader(DataLoader):
    """A DataLoader over a ShardStream that raises a worker's UserError as the one line it is."""

    def __iter__(self) -> Iterator[Sample]:
        for batch in super().__iter__():
            if WORKER_ERROR in batch:
                raise UserError(batch[WORKER_ERROR])
            yield batch


def make_loader(
    params: Params,
    dataset: str,
    domain: str,
    split: str,
    *,
    train: bool,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    with_masks: bool = False,
    mask_root: Path | None = None,
    with_shortcuts: bool = False,
) -> ShardLoader:
    """A DataLoader over `dataset`'s `domain`/`split` shards, yielding dict batches.

    Batches: `image` float32 (B, 3, S, S) ImageNet-normalised, S = data.image_size; `label` int64
    (B,); `key` list[str]; with `with_masks`, `mask` float32 (B, 1, S, S) in [0, 1], from the image
    shards or, when `mask_root` is given, from the mask shards `<mask_root>/<domain>/*.tar` (e.g.
    mask_root = data/masks/sam/<dataset>), which must match the image shards name for name; with
    `with_shortcuts` (evaluation only), `shortcut` likewise: the pixels of the spurious cue.

    train=True: DomainBed's augmentation, a fresh permutation per epoch, drops the last partial
    batch. train=False: resize only, stored order, keeps the last partial batch. Iterate once per
    epoch: the n-th pass over the loader is epoch `epoch + n` (see the module docstring).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    folder = shards_dir(params, dataset)
    remedy = shard_remedy(dataset)
    mask_remedy = "rerun the stage that writes them"
    shards = read_index(folder, domain, remedy)["splits"][split]
    mask_shards = None
    if with_masks and mask_root is not None:
        mask_root = Path(mask_root)
        listed = read_index(mask_root, domain, mask_remedy)["splits"][split]
        if listed["shards"] != shards["shards"]:
            raise UserError(
                f"{mask_root / domain}: the mask shards do not match the image shards of {folder}"
                f" (names or sample counts); {mask_remedy}"
            )
        mask_shards = [str(mask_root / domain / shard["name"]) for shard in listed["shards"]]
    if with_shortcuts and not DATASETS.get(dataset).has_shortcut_masks:
        raise UserError(f"dataset {dataset!r} has no shortcut masks")
    if with_masks and mask_root is None and not DATASETS.get(dataset).has_masks:
        raise UserError(
            f"dataset {dataset!r} has no ground-truth masks; pass a mask shard tree (mask_root)"
        )
    stream = ShardStream(
        [(str(folder / domain / shard["name"]), shard["samples"]) for shard in shards["shards"]],
        mask_shards=mask_shards,
        remedy=remedy,
        mask_remedy=mask_remedy,
        with_masks=with_masks,
        with_shortcuts=with_shortcuts,
        train=train,
        batch_size=batch_size,
        image_size=params.data.image_size,
        seed=seed,
        epoch=epoch,
        hue_jitter=params.hue_jitter(dataset),
    )
    workers = loader_workers(params.data.loader_workers, cuda=torch.cuda.is_available())
    return ShardLoader(
        stream,
        batch_size=None,  # the stream batches itself, so batches do not depend on the workers
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,  # keeps each worker's epoch count across iterations
    )
