"""Shared fixtures: paths to the shipped VLCS photographs and a params builder."""

from __future__ import annotations

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


def make_params(root: Path, **sections: Any) -> Params:
    """Params with `data.root` under a temporary folder and the given sections merged in."""
    raw: dict[str, Any] = {"data": {"root": str(root)}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_params(raw)
