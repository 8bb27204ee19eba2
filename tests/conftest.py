"""Shared fixtures: paths to the shipped VLCS photographs and a params builder."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from align.config import Params, parse_params

SHARED = Path(__file__).resolve().parents[2] / "shared"
VLCS_MINI = SHARED / "fixtures" / "vlcs_mini" / "VLCS"


@pytest.fixture
def vlcs_mini() -> Path:
    if not VLCS_MINI.is_dir():
        pytest.fail(f"test fixture missing: {VLCS_MINI} (CI clones ../shared beside the repo)")
    return VLCS_MINI


def writable_copy(source: Path, target: Path) -> Path:
    """Copy a fixture folder (shared/ is read-only) into a test's folder, every file and folder
    writable by us: as an ordinary user, unlike root, a test cannot add files to a copy that kept
    the fixture's read-only modes."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return target


def make_params(root: Path, **sections: Any) -> Params:
    """Params with `data.root` under a temporary folder and the given sections merged in."""
    raw: dict[str, Any] = {"data": {"root": str(root)}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_params(raw)


TINY_SYNTHETIC = {
    "data": {"store_size": 32, "image_size": 32, "shard_max_samples": 64},
    "datasets": {
        "synthetic": {
            "domains": ["gradient", "noise"],
            "num_classes": 2,
            "images_per_domain": 120,
            "image_size": 32,
            "spurious_p": 0.5,
        }
    },
    "grid": {"domains": ["gradient", "noise"]},
    "train": {"steps": 12, "batch_size": 8, "eval_every": 4, "checkpoint_every": 4},
    "methods": {name: {"warmup_steps": 6} for name in ("align", "m_gray", "m_sam", "m_gt")},
}
"""Two domains of 120 images at 32 px (72/24/24 per split) and a 12-step schedule: seconds."""


def build_dataset(params: Params, dataset: str) -> Params:
    """Run the three data stages (acquire, split, shard) in `params.data.root`."""
    from align.data.acquire import acquire_dataset
    from align.data.shards import write_shards
    from align.data.split import write_split

    acquire_dataset(params, dataset)
    write_split(params, dataset)
    write_shards(params, dataset)
    return params


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """The synthetic dataset at its smallest, built once per test session."""
    root = tmp_path_factory.mktemp("tiny_synthetic") / "data"
    return build_dataset(make_params(root, **TINY_SYNTHETIC), "synthetic")


def with_sections(params: Params, **sections: dict) -> Params:
    """`params` with some sections' fields replaced (nested one level)."""
    raw = params.model_dump(mode="json")
    for name, values in sections.items():
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(raw[name].get(key), dict):
                raw[name][key] = {**raw[name][key], **value}
            else:
                raw[name][key] = value
    root = Path(raw["data"].pop("root"))
    return make_params(root, **{k: v for k, v in raw.items() if k != "data"}, data=raw["data"])
