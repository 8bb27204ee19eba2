"""The shard reader: batches, determinism, workers, masks that follow their images."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from conftest import VLCS_MINI, make_params, writable_copy
from PIL import Image

from align.config import Params
from align.data.loader import make_loader
from align.data.shards import write_shards
from align.data.split import write_split
from align.data.transforms import (
    IMAGENET_MEAN,
    augment,
    denormalize,
    normalize,
    sample_augmentation,
    to_pixels,
)
from align.errors import UserError

VLCS_DOMAINS = ["Caltech101", "LabelMe", "SUN09"]


def with_workers(params: Params, workers: int) -> Params:
    return params.model_copy(
        update={"data": params.data.model_copy(update={"loader_workers": workers})}
    )


def epoch_batches(loader) -> list[dict]:
    return list(loader)


def same_batches(first: list[dict], second: list[dict]) -> bool:
    return len(first) == len(second) and all(
        a["key"] == b["key"]
        and torch.equal(a["image"], b["image"])
        and torch.equal(a["label"], b["label"])
        for a, b in zip(first, second, strict=True)
    )


@pytest.fixture(scope="module")
def vlcs(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """vlcs_mini split and sharded at 40 px, read at 32 px."""
    root = tmp_path_factory.mktemp("vlcs")
    writable_copy(VLCS_MINI, root / "raw" / "vlcs")
    params = make_params(
        root,
        data={"store_size": 40, "image_size": 32, "shard_max_samples": 8},
        datasets={"vlcs": {"domains": VLCS_DOMAINS}},
    )
    write_split(params, "vlcs")
    write_shards(params, "vlcs")
    return params


def split_entries(params: Params, domain: str, split: str) -> list[dict]:
    document = json.loads((params.data.root / "splits" / "vlcs.json").read_text())
    return document["domains"][domain][split]


def test_eval_batches_cover_the_split_once_in_a_fixed_order(vlcs: Params) -> None:
    entries = split_entries(vlcs, "Caltech101", "test")
    loader = make_loader(vlcs, "vlcs", "Caltech101", "test", train=False, batch_size=4)
    batches = epoch_batches(loader)
    assert len(batches) == len(loader) == -(-len(entries) // 4)
    assert len(batches[-1]["key"]) == (len(entries) % 4 or 4)  # the partial batch is kept
    for batch in batches:
        size = len(batch["key"])
        assert batch["image"].shape == (size, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (size,) and batch["label"].dtype == torch.int64
        assert "mask" not in batch
    labels = {entry["key"]: entry["label"] for entry in entries}
    keys = [key for batch in batches for key in batch["key"]]
    assert sorted(keys) == sorted(labels)
    assert [labels[k] for k in keys] == torch.cat([b["label"] for b in batches]).tolist()
    pixels = denormalize(torch.cat([b["image"] for b in batches]))
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_labelme_has_no_person(vlcs: Params) -> None:
    person = 4  # ["bird", "car", "chair", "dog", "person"]
    for domain, has_person in [("LabelMe", False), ("Caltech101", True)]:
        labels = torch.cat(
            [
                batch["label"]
                for split in ("train", "val", "test")
                for batch in make_loader(vlcs, "vlcs", domain, split, train=False, batch_size=16)
            ]
        )
        assert bool((labels == person).any()) == has_person


def test_eval_output_never_changes_with_epoch_or_seed(vlcs: Params) -> None:
    loader = make_loader(vlcs, "vlcs", "SUN09", "val", train=False, batch_size=5)
    first, second = epoch_batches(loader), epoch_batches(loader)
    other = make_loader(vlcs, "vlcs", "SUN09", "val", train=False, batch_size=5, seed=3, epoch=7)
    assert same_batches(first, second) and same_batches(first, epoch_batches(other))


def test_train_is_determined_by_seed_and_epoch(vlcs: Params) -> None:
    def loader(seed: int, epoch: int):
        return make_loader(
            vlcs, "vlcs", "LabelMe", "train", train=True, batch_size=8, seed=seed, epoch=epoch
        )

    entries = split_entries(vlcs, "LabelMe", "train")
    run = loader(0, 0)
    epoch0, epoch1 = epoch_batches(run), epoch_batches(run)
    assert len(epoch0) == len(run) == len(entries) // 8  # the partial batch is dropped
    assert all(len(batch["key"]) == 8 for batch in epoch0)
    assert same_batches(epoch0, epoch_batches(loader(0, 0)))
    # A run resumed at epoch 1 sees what the uninterrupted run saw in its second pass.
    assert same_batches(epoch1, epoch_batches(loader(0, 1)))
    assert [b["key"] for b in epoch0] != [b["key"] for b in epoch1]
    assert [b["key"] for b in epoch0] != [b["key"] for b in epoch_batches(loader(1, 0))]
    # Augmentation: the same image is transformed differently in another epoch.
    image0 = {k: img for b in epoch0 for k, img in zip(b["key"], b["image"], strict=True)}
    image1 = {k: img for b in epoch1 for k, img in zip(b["key"], b["image"], strict=True)}
    assert not any(torch.equal(image0[k], image1[k]) for k in image0.keys() & image1.keys())


def test_two_workers_give_every_sample_once_and_the_same_batches(vlcs: Params) -> None:
    parallel = with_workers(vlcs, 2)
    entries = split_entries(vlcs, "LabelMe", "train")
    # 46 samples in 6 shards of 8: each worker decodes whole batches, whatever the shards.
    eval_batches = epoch_batches(
        make_loader(parallel, "vlcs", "LabelMe", "train", train=False, batch_size=5)
    )
    keys = [key for batch in eval_batches for key in batch["key"]]
    assert sorted(keys) == sorted(entry["key"] for entry in entries)
    assert same_batches(
        eval_batches,
        epoch_batches(make_loader(vlcs, "vlcs", "LabelMe", "train", train=False, batch_size=5)),
    )
    loader = make_loader(parallel, "vlcs", "LabelMe", "train", train=True, batch_size=6, seed=2)
    serial = make_loader(vlcs, "vlcs", "LabelMe", "train", train=True, batch_size=6, seed=2)
    assert same_batches(epoch_batches(loader), epoch_batches(serial))
    assert same_batches(epoch_batches(loader), epoch_batches(serial))  # epoch 1, persistent workers


def test_missing_shards_name_the_command_to_run(tmp_path: Path) -> None:
    params = make_params(tmp_path, datasets={"vlcs": {"domains": VLCS_DOMAINS}})
    remedy = r"run `align shard --dataset vlcs` \(or `dvc repro shard`\)"
    with pytest.raises(UserError, match=remedy):
        make_loader(params, "vlcs", "LabelMe", "train", train=True, batch_size=4)


def test_masks_of_a_dataset_without_masks_are_a_user_error(vlcs: Params) -> None:
    with pytest.raises(UserError, match="no ground-truth masks"):
        make_loader(vlcs, "vlcs", "LabelMe", "train", train=True, batch_size=4, with_masks=True)


def object_pattern(index: int, size: int) -> np.ndarray:
    """An asymmetric object (an L shape placed by `index`), 255 on 0, so flips and crops show."""
    pattern = np.zeros((size, size), dtype=np.uint8)
    top, left = 4 + index % 5, 3 + index % 7
    pattern[top : top + 18, left : left + 6] = 255
    pattern[top + 12 : top + 18, left : left + 16] = 255
    return pattern


@pytest.fixture(scope="module")
def masked(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """Images whose content is their own mask: white objects on black, PNG, with masks."""
    root = tmp_path_factory.mktemp("masked")
    raw = root / "raw" / "synthetic"
    for index in range(30):
        relpath = f"tiles/{'abc'[index % 3]}/{index:02d}.png"
        pattern = object_pattern(index, 40)
        for path, image in [
            (raw / relpath, Image.fromarray(pattern).convert("RGB")),
            (raw / ".masks" / relpath, Image.fromarray(pattern)),
            # The shortcut: everything off the object, as the colour-background variant's.
            (raw / ".shortcuts" / relpath, Image.fromarray(255 - pattern)),
        ]:
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    params = make_params(
        root,
        data={"store_size": 40, "image_size": 32},
        datasets={"synthetic": {"domains": ["tiles"]}},
        grid={"domains": ["tiles"]},
    )
    write_split(params, "synthetic")
    write_shards(params, "synthetic")
    return params


def test_augment_moves_image_and_mask_identically() -> None:
    pattern = object_pattern(3, 40)
    image, mask = Image.fromarray(pattern).convert("RGB"), Image.fromarray(pattern)
    for seed in range(20):
        drawn = sample_augmentation(40, 40, torch.Generator().manual_seed(seed))
        geometry_only = dataclasses.replace(
            drawn, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, grayscale=False
        )
        pixels, moved = augment(image, mask, 32, geometry_only)
        assert np.array_equal(np.asarray(pixels)[..., 0], np.asarray(moved))
        assert np.asarray(moved).shape == (32, 32)


def test_evaluation_batches_carry_the_shortcut_mask_beside_the_object_mask(
    masked: Params,
) -> None:
    batches = list(make_loader(masked, "synthetic", "tiles", "test", train=False, batch_size=4,
                               with_masks=True, with_shortcuts=True))
    for batch in batches:
        assert batch["shortcut"].shape == batch["mask"].shape
        # The fixture's shortcut is everything off the object (bilinear edges aside).
        assert torch.allclose(batch["shortcut"] + batch["mask"], torch.ones_like(batch["mask"]),
                              atol=1 / 255)
    with pytest.raises(ValueError, match="evaluation only"):
        make_loader(masked, "synthetic", "tiles", "train", train=True, batch_size=4,
                    with_masks=True, with_shortcuts=True)


def test_loader_masks_follow_their_augmented_images(masked: Params) -> None:
    loader = make_loader(
        masked, "synthetic", "tiles", "train", train=True, batch_size=4, with_masks=True
    )

    def iou(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a & b).sum() / (a | b).sum())

    overlap, mirrored, flipped_or_cropped = [], [], 0
    for batch in loader:
        masks = batch["mask"]
        assert masks.shape == (4, 1, 32, 32) and masks.dtype == torch.float32
        assert masks.min() >= 0 and masks.max() <= 1
        brightness = denormalize(batch["image"]).mean(dim=1, keepdim=True)
        for shade, mask in zip(brightness, masks, strict=True):
            # Colour jitter changes the two tones but never swaps them: threshold midway. Clipping
            # moves a few border pixels across; a misplaced mask (e.g. mirrored) overlaps far less.
            inside = shade > (shade.min() + shade.max()) / 2
            overlap.append(iou(inside, mask > 0.5))
            mirrored.append(iou(inside, mask.flip(-1) > 0.5))
        unaugmented = to_pixels(
            [
                Image.fromarray(object_pattern(int(key[-2:]), 40)).resize((32, 32))
                for key in batch["key"]
            ]
        )
        flipped_or_cropped += int(((masks > 0.5) != (unaugmented > 0.5)).any(dim=(1, 2, 3)).sum())
    assert min(overlap) > 0.8 and max(mirrored) < 0.6
    assert flipped_or_cropped > 0


def test_masks_from_a_second_shard_tree(masked: Params, tmp_path: Path) -> None:
    """A SAM-like tree: one mask shard per image shard, same names and keys, inverted masks."""
    images = masked.data.root / "shards" / "synthetic" / "tiles"
    masks = tmp_path / "sam" / "synthetic" / "tiles"
    masks.mkdir(parents=True)
    for shard in sorted(images.glob("*.tar")):
        pipeline = wds.WebDataset(
            str(shard), shardshuffle=False, nodesplitter=None, workersplitter=None
        )
        with wds.TarWriter(str(masks / shard.name)) as writer:
            for sample in pipeline:
                mask = 255 - np.asarray(Image.open(io.BytesIO(sample["mask.png"])))
                writer.write({"__key__": sample["__key__"], "mask.png": Image.fromarray(mask)})
    shutil.copy(images / "index.json", masks / "index.json")

    def loader(**kwargs):
        return make_loader(
            masked,
            "synthetic",
            "tiles",
            "val",
            train=False,
            batch_size=3,
            with_masks=True,
            **kwargs,
        )

    ground_truth = torch.cat([batch["mask"] for batch in loader()])
    from_tree = torch.cat(
        [batch["mask"] for batch in loader(mask_root=tmp_path / "sam" / "synthetic")]
    )
    assert torch.allclose(from_tree, 1 - ground_truth, atol=1e-6)

    (masks / "index.json").write_text(json.dumps({"splits": {"val": {"shards": []}}}))
    with pytest.raises(UserError, match="do not match the image shards"):
        loader(mask_root=tmp_path / "sam" / "synthetic")


def test_normalize_round_trip() -> None:
    pixels = torch.rand(2, 3, 5, 5)
    assert torch.allclose(denormalize(normalize(pixels)), pixels, atol=1e-6)
    grey = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(normalize(grey), torch.zeros(1, 3, 2, 2), atol=1e-6)


def damaged_copy(params: Params, tmp_path: Path) -> tuple[Params, Path]:
    """A copy of `params`' data root, and the path of the second test shard of Caltech101."""
    shutil.copytree(params.data.root, tmp_path / "data")
    copy = params.model_copy(
        update={"data": params.data.model_copy(update={"root": tmp_path / "data"})}
    )
    return copy, tmp_path / "data" / "shards" / "vlcs" / "Caltech101" / "test-000001.tar"


def damage_first_image(shard: Path) -> None:
    """Overwrite the start of the shard's first image with zeros; the tar stays readable."""
    with tarfile.open(shard) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(".jpg"))
    with shard.open("r+b") as file:
        file.seek(member.offset_data)
        file.write(bytes(16))


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda shard: shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2]),
         "truncated or damaged"),
        (damage_first_image, "cannot be decoded"),
    ],
)
def test_a_damaged_shard_names_itself_and_the_stage_to_rerun(
    vlcs: Params, tmp_path: Path, workers: int, damage, what: str
) -> None:
    params, shard = damaged_copy(with_workers(vlcs, workers), tmp_path)
    damage(shard)
    loader = make_loader(params, "vlcs", "Caltech101", "test", train=False, batch_size=4)
    with pytest.raises(UserError) as caught:
        list(loader)
    message = str(caught.value)
    assert message.startswith(f"{shard}: ") and what in message and "\n" not in message
    assert "align shard --dataset vlcs" in message and "dvc repro shard" in message
