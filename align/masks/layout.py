"""Where SAM's precomputed masks live and whether they exist: what the stages that read them need,
without importing Segment Anything (`align.masks.sam` computes them)."""

from __future__ import annotations

import json
from pathlib import Path

from align.config import Params
from align.errors import UserError

STATUS_NAME = "status.json"


def sam_mask_root(params: Params, dataset: str) -> Path:
    """The mask shard tree of `dataset`: the `mask_root` to give `make_loader`."""
    return params.data.root / "masks" / "sam" / dataset


def status_file(params: Params, dataset: str) -> Path:
    """`<mask root>/status.json`: whether SAM's masks of `dataset` exist, and why not."""
    return sam_mask_root(params, dataset) / STATUS_NAME


def sam_masks_available(params: Params, dataset: str) -> tuple[bool, str]:
    """Whether the `sam_masks` stage wrote masks for `dataset`, and a line saying why (not)."""
    path = status_file(params, dataset)
    if not path.is_file():
        return False, (
            f"{path}: no SAM mask status; run `align sam-masks --dataset {dataset}`"
            " (or `dvc repro sam_masks`)"
        )
    status = json.loads(path.read_text())
    if not status["available"]:
        return False, status["reason"]
    return True, (
        f"SAM {status['model_type']} masks ({status['prompt']} prompt) of {status['samples']}"
        f" images under {path.parent}"
    )


def require_sam_masks(params: Params, dataset: str) -> Path:
    """The mask root of `dataset`'s SAM masks; a UserError saying how to make them if absent."""
    available, reason = sam_masks_available(params, dataset)
    if not available:
        raise UserError(
            f"no SAM masks for {dataset} ({reason}); set sam.checkpoint in params.yaml to the"
            f" SAM checkpoint file and rerun `align sam-masks --dataset {dataset}`"
            " (or `dvc repro sam_masks`)"
        )
    return sam_mask_root(params, dataset)
