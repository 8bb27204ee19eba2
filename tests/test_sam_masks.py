"""Stage `sam_masks`: mask shards keyed like the images, read by the loader, status, errors.

No SAM checkpoint can be downloaded here, so the tests build a real SAM (segment-anything's own
encoder, prompt encoder and decoder classes) at a tiny size with random weights, save its state
dict, and stand it in for `vit_b` in segment-anything's `sam_model_registry`.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
import yaml
from conftest import make_params
from PIL import Image
from segment_anything import sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

import align.device
import align.masks.sam
from align.cli import main
from align.config import Params, SamConfig
from align.data.acquire import acquire_dataset
from align.data.loader import make_loader, read_index
from align.data.shards import write_shards
from align.data.split import write_split
from align.data.transforms import augment, augmentation_seed, sample_augmentation, to_normalized
from align.errors import UserError
from align.masks.layout import require_sam_masks, sam_mask_root, sam_masks_available
from align.masks.sam import load_sam, object_prompt, pick_sam_device, write_sam_masks

DOMAINS = ["gradient", "noise"]
STORE = 32
TINY_DATA = {
    "data": {"store_size": STORE, "image_size": 24, "shard_max_samples": 8},
    "datasets": {
        "synthetic": {
            "domains": DOMAINS,
            "num_classes": 2,
            "images_per_domain": 30,
            "image_size": STORE,
        }
    },
    "grid": {"domains": DOMAINS},
}
"""Two domains of 30 images (18/6/6), 8 per shard: three train shards, one val, one test."""


def build_tiny_sam(encoder_width: int = 32, checkpoint: str | None = None) -> Sam:
    """SAM's architecture at 64 px with one encoder block: a 4x4 embedding, milliseconds a call."""
    image_size, patch, prompt_dim = 64, 16, 32
    grid = image_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=patch,
            embed_dim=encoder_width,
            depth=1,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=prompt_dim,
            qkv_bias=True,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    )
    return sam.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model's matmuls are too small to share: two threads make each call ~5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_registry() -> Iterator[None]:
    """`vit_b` builds the tiny SAM (of encoder width 32), `vit_l` one of width 48."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sam_model_registry, "vit_b", build_tiny_sam)
        patch.setitem(sam_model_registry, "vit_l", partial(build_tiny_sam, 48))
        yield


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Params:
    """The tiny synthetic dataset, split and sharded, with the tiny checkpoint configured."""
    root = tmp_path_factory.mktemp("sam_data") / "data"
    params = make_params(
        root, **TINY_DATA, sam={"checkpoint": str(tiny_checkpoint), "device": "cpu"}
    )
    acquire_dataset(params, "synthetic")
    write_split(params, "synthetic")
    write_shards(params, "synthetic")
    return params


@pytest.fixture(scope="module")
def masked(images: Params, tiny_registry: None) -> Params:
    write_sam_masks(images, "synthetic")
    return images


def with_root(params: Params, root: Path) -> Params:
    """`params` reading and writing under `root`, with the split and image shards copied there."""
    for part in ("splits", "shards"):
        shutil.copytree(params.data.root / part, root / part)
    return params.model_copy(update={"data": params.data.model_copy(update={"root": root})})


def read_tar(path: Path) -> list[dict]:
    pipeline = wds.WebDataset(
        str(path), shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
    )
    return list(pipeline)


def test_mask_shards_are_keyed_named_and_indexed_like_the_image_shards(masked: Params) -> None:
    image_root = masked.data.root / "shards" / "synthetic"
    mask_root = sam_mask_root(masked, "synthetic")
    assert mask_root == masked.data.root / "masks" / "sam" / "synthetic"
    for domain in DOMAINS:
        image_index = read_index(image_root, domain, "")
        mask_index = read_index(mask_root, domain, "")
        assert mask_index["splits"] == image_index["splits"]
        names = sorted(path.name for path in (image_root / domain).glob("*.tar"))
        assert sorted(path.name for path in (mask_root / domain).glob("*.tar")) == names
        assert len(names) == 5 and not list((mask_root / domain).glob(".*"))
        for name in names:
            image_samples, mask_samples = (
                read_tar(image_root / domain / name),
                read_tar(mask_root / domain / name),
            )
            assert [s["__key__"] for s in mask_samples] == [s["__key__"] for s in image_samples]
            for sample in mask_samples:
                assert set(sample) - {"__url__", "__local_path__"} == {"__key__", "mask.png"}
                mask = Image.open(io.BytesIO(sample["mask.png"]))
                assert mask.format == "PNG" and mask.mode == "L" and mask.size == (STORE, STORE)
                assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_status_counts_the_masks_and_marks_them_available(masked: Params) -> None:
    status = json.loads((sam_mask_root(masked, "synthetic") / "status.json").read_text())
    assert status["available"] is True and status["model_type"] == "vit_b"
    assert status["prompt"] == "center_box" and status["samples"] == 60
    assert status["domains"] == {domain: {"train": 18, "val": 6, "test": 6} for domain in DOMAINS}
    assert 0 <= status["mean_foreground"] <= 1 and 0 <= status["empty_masks"] <= 60
    available, description = sam_masks_available(masked, "synthetic")
    assert available and "60 images" in description
    assert require_sam_masks(masked, "synthetic") == sam_mask_root(masked, "synthetic")


def test_loader_augments_the_sam_masks_with_their_images(masked: Params) -> None:
    mask_root = sam_mask_root(masked, "synthetic")
    folder = masked.data.root / "shards" / "synthetic" / "noise"
    stored = {
        sample["__key__"]: sample
        for shard in sorted(folder.glob("train-*.tar"))
        for sample in read_tar(shard)
    }
    sam = {
        sample["__key__"]: sample["mask.png"]
        for shard in sorted((mask_root / "noise").glob("train-*.tar"))
        for sample in read_tar(shard)
    }
    loader = make_loader(
        masked,
        "synthetic",
        "noise",
        "train",
        train=True,
        batch_size=4,
        seed=3,
        with_masks=True,
        mask_root=mask_root,
    )
    batches = list(loader)
    assert len(batches) == 18 // 4
    for batch in batches:
        assert batch["mask"].shape == (4, 1, 24, 24)
        for position, key in enumerate(batch["key"]):
            image = Image.open(io.BytesIO(stored[key]["png"])).convert("RGB")
            mask = Image.open(io.BytesIO(sam[key]))
            generator = torch.Generator().manual_seed(augmentation_seed(3, 0, key))
            drawn = sample_augmentation(STORE, STORE, generator, masked.hue_jitter("synthetic"))
            expected_image, expected_mask = augment(image, mask, 24, drawn)
            assert torch.equal(batch["image"][position], to_normalized([expected_image])[0])
            expected = torch.from_numpy(np.array(expected_mask)).float().div(255)
            assert torch.equal(batch["mask"][position, 0], expected)


def test_masks_are_deterministic(masked: Params, tmp_path: Path) -> None:
    again = with_root(masked, tmp_path / "data")
    write_sam_masks(again, "synthetic")
    first, second = sam_mask_root(masked, "synthetic"), sam_mask_root(again, "synthetic")
    for shard in sorted(first.glob("*/*.tar")):
        assert (second / shard.relative_to(first)).read_bytes() == shard.read_bytes()


def test_without_a_checkpoint_the_stage_records_why(tmp_path: Path) -> None:
    params = make_params(tmp_path / "data", **TINY_DATA)
    assert params.sam.checkpoint is None
    stale = sam_mask_root(params, "synthetic") / "noise"
    stale.mkdir(parents=True)
    (stale / "train-000000.tar").write_bytes(b"old")
    (stale / "index.json").write_text("{}")

    root = write_sam_masks(params, "synthetic")  # no shards needed: nothing is read
    reason = (
        "SAM checkpoint not provided: set sam.checkpoint to the path of sam_vit_b_01ec64.pth"
        " (https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth)"
    )
    assert json.loads((root / "status.json").read_text()) == {
        "available": False,
        "reason": reason,
    }
    assert [path.name for path in root.rglob("*") if path.is_file()] == ["status.json"]
    assert sam_masks_available(params, "synthetic") == (False, reason)
    with pytest.raises(UserError, match=r"no SAM masks for synthetic .*set sam\.checkpoint"):
        require_sam_masks(params, "synthetic")


def test_masks_never_made_are_not_available(tmp_path: Path) -> None:
    params = make_params(tmp_path / "data")
    available, reason = sam_masks_available(params, "synthetic")
    assert not available and "align sam-masks --dataset synthetic" in reason


def test_a_missing_checkpoint_is_one_line_naming_the_key(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    params_file = tmp_path / "params.yaml"
    raw = {"data": {"root": str(tmp_path / "data")}, "sam": {"checkpoint": str(missing)}}
    params_file.write_text(yaml.safe_dump(raw))
    assert main(["--params", str(params_file), "sam-masks"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert f"sam.checkpoint: {missing} does not exist" in error
    assert not (tmp_path / "data" / "masks" / "sam" / "synthetic" / "status.json").exists()


def test_a_checkpoint_of_another_type_or_no_checkpoint_is_a_user_error(
    tiny_checkpoint: Path, tiny_registry: None, tmp_path: Path
) -> None:
    cpu = torch.device("cpu")
    assert isinstance(load_sam(SamConfig(checkpoint=str(tiny_checkpoint)), cpu), Sam)
    wrong_type = SamConfig(checkpoint=str(tiny_checkpoint), model_type="vit_l")
    with pytest.raises(UserError, match=r"sam\.checkpoint: .* is not a SAM vit_l checkpoint"):
        load_sam(wrong_type, cpu)
    garbage = tmp_path / "sam_vit_b.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"sam\.checkpoint: .* is not a PyTorch checkpoint"):
        load_sam(SamConfig(checkpoint=str(garbage)), cpu)


def test_object_prompts() -> None:
    points, labels, box = object_prompt(40, 60, SamConfig(box_fraction=0.5))
    assert points.tolist() == [[30.0, 20.0]] and labels.tolist() == [1]
    assert box.tolist() == [15.0, 10.0, 45.0, 30.0]
    assert object_prompt(40, 60, SamConfig(prompt="center_point"))[2] is None


def test_an_interrupted_run_leaves_nothing_that_looks_complete(
    masked: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = with_root(masked, tmp_path / "data")
    write_sam_masks(params, "synthetic")
    root = sam_mask_root(params, "synthetic")
    real: Callable = align.masks.sam.predict_object_mask
    calls = []

    def predict_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 12:  # the fourth image of the second train shard of the first domain
            # While a shard is written, only its hidden temporary file exists.
            assert (root / "gradient" / ".train-000001.tar.tmp").is_file()
            assert not (root / "gradient" / "train-000001.tar").exists()
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(align.masks.sam, "predict_object_mask", predict_then_stop)
    with pytest.raises(KeyboardInterrupt):
        write_sam_masks(params, "synthetic")
    assert not (root / "status.json").exists()
    assert not list(root.glob("*/index.json")) and not list(root.glob("*/.*"))
    assert [path.name for path in (root / "gradient").iterdir()] == ["train-000000.tar"]
    assert not sam_masks_available(params, "synthetic")[0]
    with pytest.raises(UserError, match="no shards of domain"):
        make_loader(
            params,
            "synthetic",
            "gradient",
            "train",
            train=False,
            batch_size=4,
            with_masks=True,
            mask_root=root,
        )


def test_device_is_cuda_only_when_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_sam_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="sam.device: cuda"):
        pick_sam_device("cuda")
    # One GPU as far as CUDA says: SAM takes it through the job's GPU lock, like training does.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(align.device, "_claimed", None)
    monkeypatch.setenv("ALIGN_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert pick_sam_device("auto") == torch.device("cuda", 0)
    assert (tmp_path / "gpu-0.lock").is_file()
    assert pick_sam_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("damage", ["truncate", "image bytes"])
def test_a_damaged_image_shard_names_itself_and_the_stage_to_rerun(
    masked: Params, tmp_path: Path, damage: str
) -> None:
    params = with_root(masked, tmp_path / "data")
    shard = tmp_path / "data" / "shards" / "synthetic" / "noise" / "train-000001.tar"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    else:
        with tarfile.open(shard) as archive:
            member = next(m for m in archive.getmembers() if m.name.split(".", 1)[1] == "png")
        with shard.open("r+b") as file:
            file.seek(member.offset_data)
            file.write(bytes(16))
    with pytest.raises(UserError) as caught:
        write_sam_masks(params, "synthetic")
    message = str(caught.value)
    assert message.startswith(f"{shard}: ") and "\n" not in message
    assert "align shard --dataset synthetic" in message and "dvc repro shard" in message
    assert not (sam_mask_root(params, "synthetic") / "status.json").exists()
