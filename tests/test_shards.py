"""Stage `shard`: index, shard sizes and fields, lossless PNG and masks, atomic writes."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import VLCS_MINI, make_params, writable_copy
from PIL import Image

import align.data.shards
from align.config import Params
from align.data.images import decode_8bit
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
    writable_copy(VLCS_MINI, root / "raw" / "vlcs")
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
            # The shortcut: everything off the object, as the colour-background variant's.
            (raw / ".shortcuts" / relpath, Image.fromarray(255 - pattern)),
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
    index = json.loads((folder / "index.json").read_text())
    assert index["has_masks"] is index["has_shortcut_masks"] is True
    samples = [s for shard in sorted(folder.glob("*.tar")) for s in read_samples(shard)]
    assert len(samples) == 8
    for sample in samples:
        assert "jpg" not in sample
        image = Image.open(io.BytesIO(sample["png"]))
        mask = Image.open(io.BytesIO(sample["mask.png"]))
        assert image.format == mask.format == "PNG" and image.size == mask.size == (10, 10)
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}
        shortcut = Image.open(io.BytesIO(sample["shortcut.png"]))
        assert (shortcut.format, shortcut.mode, shortcut.size) == ("PNG", "L", (10, 10))
        assert np.array_equal(np.asarray(shortcut), 255 - np.asarray(mask))
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


def png_bytes(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit colour): `samples` (H, W[, C])."""
    height, width = samples.shape[:2]
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_sixteen_bit_images_are_scaled_to_eight_bits_not_clipped(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "vlcs" / "D" / "scan"
    raw.mkdir(parents=True)
    size = (8, 8)
    # 16-bit grayscale PNG (PIL mode I;16), TIFF (I;16) and a 32-bit integer TIFF (mode I).
    Image.fromarray(np.full(size, 128 * 257, np.uint16)).save(raw / "gray16.png")
    Image.fromarray(np.full(size, 64 * 257, np.uint16)).save(raw / "gray16.tif")
    Image.fromarray(np.full(size, 32 * 257, np.int32)).save(raw / "int32.tif")
    rgb = np.empty((*size, 3), np.uint16)
    rgb[...] = (200 * 257, 100 * 257, 10 * 257)
    (raw / "rgb16.png").write_bytes(png_bytes(rgb, colour_type=2))
    # Floating-point samples have no range to scale from: refused, with the reason in the report.
    Image.fromarray(np.full(size, 0.5, np.float32)).save(raw / "float.tif")
    params = make_params(tmp_path, data={"store_size": 8, "image_size": 8},
                         datasets={"vlcs": {"domains": ["D"]}})

    _, report_file = write_split(params, "vlcs")
    write_shards(params, "vlcs")

    skipped = json.loads(report_file.read_text())["skipped"]
    assert [item["path"] for item in skipped] == ["D/scan/float.tif"]
    assert "floating-point" in skipped[0]["reason"]
    folder = tmp_path / "shards" / "vlcs" / "D"
    stored = {
        json.loads(sample["json"])["path"]: np.asarray(Image.open(io.BytesIO(sample["png"])))
        for shard in sorted(folder.glob("*.tar"))
        for sample in read_samples(shard)
    }
    expected = {"gray16.png": (128,) * 3, "gray16.tif": (64,) * 3, "int32.tif": (32,) * 3,
                "rgb16.png": (200, 100, 10)}
    assert set(stored) == {f"D/scan/{name}" for name in expected}
    for name, pixel in expected.items():
        image = stored[f"D/scan/{name}"]
        assert image.shape == (8, 8, 3) and (image == pixel).all(), name


def test_decoding_is_bounded_by_decode_workers_not_by_the_cpu_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    masked_params(tmp_path)  # the raw tree
    params = make_params(tmp_path, data={"store_size": 10, "image_size": 10, "decode_workers": 2},
                         datasets={"synthetic": {"domains": ["noise"]}},
                         grid={"domains": ["noise"]})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    threads: set[int] = set()
    real_open = Image.open

    def recording_open(*args, **kwargs):
        threads.add(threading.get_ident())
        time.sleep(0.01)  # long enough for every worker of the pool to pick up an image
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    write_split(params, "synthetic")
    assert len(threads) <= 2
    threads.clear()
    write_shards(params, "synthetic")
    assert len(threads) <= 2  # only the pool decodes; this thread writes the tar files


def test_large_jpegs_are_decoded_at_a_reduced_scale(tmp_path: Path) -> None:
    path = tmp_path / "large.jpg"
    Image.new("RGB", (2048, 1024), (90, 120, 200)).save(path)
    with Image.open(path) as source:
        decoded = decode_8bit(source, min_size=100)
    # 1/8 scale keeps both sides >= 100; a full decode would hold 16x the pixels.
    assert decoded.size == (256, 128)
    with Image.open(path) as source:
        assert decode_8bit(source, min_size=300).size == (1024, 512)  # 1/4 would make 256 < 300
