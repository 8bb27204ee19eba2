"""Shared fixtures: paths to the shipped VLCS photographs and a params builder."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def markdown_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell, as lists of stripped cells (the first table's
    row where two tables share a first cell), whatever the padding between the pipes."""
    rows = [line.strip().strip("|").split(" | ") for line in text.splitlines()
            if line.startswith("| ")]
    found: dict[str, list[str]] = {}
    for cells in rows:
        found.setdefault(cells[0].strip(), [c.strip() for c in cells])
    return found


def make_params(root: Path, **sections: Any) -> Params:
    """Params with `data.root` under a temporary folder and the given sections merged in."""
    raw: dict[str, Any] = {"data": {"root": str(root)}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_params(raw)


TINY_PRESET = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
                             .read_text(encoding="utf-8"))
TINY_SYNTHETIC = {
    **{section: TINY_PRESET[section] for section in ("datasets", "train", "methods")},
    "data": {key: value for key, value in TINY_PRESET["data"].items() if key != "root"},
    "grid": {"domains": TINY_PRESET["grid"]["domains"]},
}
"""configs/tiny.yaml, the README's first try, with each test's own grid of methods and seeds (the
code's default unless it says): two domains of 120 images at 32 px (72/24/24 per split) and a
12-step schedule, seconds."""


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


@pytest.fixture(scope="session")
def report(tiny_synthetic: Params, tmp_path_factory: pytest.TempPathFactory):
    """erm and align trained for two steps on both tiny domains, hand-written eval records
    (tests/test_report.py's), and the report written from them: (params, runs, results, the
    files written under results). Built once per session: tests/test_report.py and
    tests/test_results_page.py read it."""
    import torch
    from test_report import DOMAINS, write_evals

    from align.report import write_report
    from align.runs import RunSpec
    from align.train import train_run

    torch.set_num_threads(1)
    params = with_sections(
        tiny_synthetic,
        grid={"methods": ["erm", "align"], "seeds": [0]},
        train={"steps": 2, "eval_every": 2, "checkpoint_every": 2},
        methods={"align": {"warmup_steps": 1}},
    )
    root = tmp_path_factory.mktemp("report")
    runs, results = root / "runs", root / "results"
    for method in ("erm", "align"):
        for domain in DOMAINS:
            train_run(params, RunSpec("synthetic", domain, method, 0), runs, show_progress=False)
    write_evals(runs, ["erm", "align"], [0])
    return params, runs, results, write_report(params, runs, results)
