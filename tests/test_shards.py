"""Stage `shard`: index, shard sizes and fields, lossless PNG and masks, atomic writes."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import VLCS_MINI, make_params
from PIL import Image

import align.data.shards
from align.config import Params
from align.data.loader import make_loader
from align.data.shards import write_shards
from align.data.split import write_split
from align.errors import UserError

VLCS_DOMAINS = ["Caltech101", "LabelMe", "SUN09"]


def read_samples(shard: Path) -> list[dict]:
    pipeline = wds.WebDataset(
        str(shard), shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
    )
    return list(pipeline)


@pytest.fixture(scope="module")
def vlcs(tmp_path_factory: pytest.TempPathFactory) -> Params:
    root = tmp_path_factory.mktemp("vlcs")
    shutil.copytree(VLCS_MINI, root / "raw" / "vlcs")
    params = make_params(
        root,
        data={"store_size": 48, "shard_max_samples": 10},
        datasets={"vlcs": {"domains": VLCS_DOMAINS}},
    )
    write_split(params, "vlcs")
    write_shards(params, "vlcs")
    return params


def test_index_lists_every_shard_with_its_size(vlcs: Params) -> None:
    split = json.loads((vlcs.data.root / "splits" / "vlcs.json").read_text())
    for domain in VLCS_DOMAINS:
        folder = vlcs.data.root / "shards" / "vlcs" / domain
        index = json.loads((folder / "index.json").read_text())
        assert index["classes"] == split["classes"] and index["store_size"] == 48
        listed = set()
        for name in ("train", "val", "test"):
            entries = split["domains"][domain][name]
            shards = index["splits"][name]["shards"]
            assert index["splits"][name]["samples"] == len(entries)
            assert [s["name"] for s in shards] == [
                f"{name}-{n:06d}.tar" for n in range(len(shards))
            ]
            assert all(0 < s["samples"] <= 10 for s in shards)
            keys = [
                sample["__key__"] for s in shards for sample in read_samples(folder / s["name"])
            ]
            assert sorted(keys) == sorted(entry["key"] for entry in entries)
            listed |= {s["name"] for s in shards}
        assert {path.name for path in folder.iterdir()} == listed | {"index.json"}


def test_sample_fields(vlcs: Params) -> None:
    split = json.loads((vlcs.data.root / "splits" / "vlcs.json").read_text())
    entries = {entry["key"]: entry for entry in split["domains"]["LabelMe"]["val"]}
    folder = vlcs.data.root / "shards" / "vlcs" / "LabelMe"
    samples = [s for shard in sorted(folder.glob("val-*.tar")) for s in read_samples(shard)]
    assert len(samples) == len(entries)
    for sample in samples:
        assert set(sample) - {"__url__", "__local_path__"} == {"__key__", "jpg", "cls", "json"}
        entry = entries[sample["__key__"]]
        assert int(sample["cls"]) == entry["label"]
        assert json.loads(sample["json"]) == {
            "domain": "LabelMe",
            "class": entry["class"],
            "path": entry["path"],
        }
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.format == "JPEG" and image.size == (48, 48) and image.mode == "RGB"
    assert {entry["class"] for entry in entries.values()} <= {"bird", "car", "chair", "dog"}


def test_shards_are_byte_identical_when_rewritten(vlcs: Params) -> None:
    shard = vlcs.data.root / "shards" / "vlcs" / "SUN09" / "train-000000.tar"
    before = shard.read_bytes()
    write_shards(vlcs, "vlcs")
    assert shard.read_bytes() == before


def masked_params(root: Path) -> Params:
    """A tiny synthetic-layout raw tree: PNG images and their masks, 20 x 20 px."""
    raw = root / "raw" / "synthetic"
    for index in range(8):
        relpath = f"noise/{'ab'[index % 2]}/{index}.png"
        pattern = np.zeros((20, 20), dtype=np.uint8)
        pattern[2 : 4 + index, 3:15] = 255
        for path, image in [
            (raw / relpath, Image.fromarray(pattern).convert("RGB")),
            (raw / ".masks" / relpath, Image.fromarray(pattern)),
        ]:
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    return make_params(
        root,
        data={"store_size": 10, "image_size": 10},
        datasets={"synthetic": {"domains": ["noise"]}},
        grid={"domains": ["noise"]},
    )


def test_png_sources_stay_png_and_masks_are_one_channel_nearest(tmp_path: Path) -> None:
    params = masked_params(tmp_path)
    write_split(params, "synthetic")
    write_shards(params, "synthetic")
    folder = tmp_path / "shards" / "synthetic" / "noise"
    assert json.loads((folder / "index.json").read_text())["has_masks"] is True
    samples = [s for shard in sorted(folder.glob("*.tar")) for s in read_samples(shard)]
    assert len(samples) == 8
    for sample in samples:
        assert "jpg" not in sample
        image = Image.open(io.BytesIO(sample["png"]))
        mask = Image.open(io.BytesIO(sample["mask.png"]))
        assert image.format == mask.format == "PNG" and image.size == mask.size == (10, 10)
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}
        # Resized bilinearly (image) and by nearest neighbour (mask), they differ at most at edges.
        differ = (np.asarray(image)[..., 0] > 127) != (np.asarray(mask) > 127)
        assert differ.mean() <= 0.1


def test_an_interrupted_run_leaves_no_finished_looking_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = masked_params(tmp_path)
    write_split(params, "synthetic")
    write_shards(params, "synthetic")
    folder = tmp_path / "shards" / "synthetic" / "noise"
    make_loader(params, "synthetic", "noise", "test", train=False, batch_size=2)

    encode = align.data.shards._encode_sample
    calls = []

    def fail_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return encode(*args, **kwargs)

    monkeypatch.setattr(align.data.shards, "_encode_sample", fail_on_the_third)
    with pytest.raises(RuntimeError, match="disk full"):
        write_shards(params, "synthetic")
    assert sorted(path.name for path in folder.iterdir()) == []
    with pytest.raises(UserError, match="align shard --dataset synthetic"):
        make_loader(params, "synthetic", "noise", "test", train=False, batch_size=2)


def test_missing_split_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="align split --dataset vlcs"):
        write_shards(make_params(tmp_path), "vlcs")


def test_each_shard_is_a_plain_tar(vlcs: Params) -> None:
    shard = vlcs.data.root / "shards" / "vlcs" / "Caltech101" / "train-000000.tar"
    with tarfile.open(shard) as archive:
        names = archive.getnames()
    assert len(names) == 3 * 10 and all(name.count(".") == 1 for name in names)
