"""Loading a finished run's selected models (`model.pt`) for evaluation and figures."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from align.errors import UserError
from align.models.classifier import ResNetClassifier, create_classifier
from align.models.masker import Masker

BEST_MODEL = "model.pt"


@dataclass
class TrainedRun:
    classifier: ResNetClassifier
    masker: Masker | None
    classes: list[str]
    spec: dict[str, Any]
    """dataset, domain, method (as requested) and seed."""
    identity: dict[str, Any]
    step: int
    val_accuracy: float


def load_trained(run_dir: Path, device: torch.device | str = "cpu") -> TrainedRun:
    """The models a run selected on validation accuracy, in eval mode on `device`."""
    path = Path(run_dir) / BEST_MODEL
    if not path.is_file():
        raise UserError(f"{path} is missing: train the run first (align train, or dvc repro)")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except (EOFError, RuntimeError, pickle.UnpicklingError) as error:
        raise UserError(f"{path} is unreadable ({error}); train the run again") from None
    model = state["identity"]["params"]["model"]
    # The weights replace the initial ones, so no pretrained file needs to be present here.
    classifier = create_classifier(
        len(state["classes"]), "none", model["small_stem"], model.get("layer4_stride", 2)
    )
    classifier.load_state_dict(state["models"]["classifier"])
    masker = None
    if "masker" in state["models"]:
        masker = Masker(model["masker_width"])
        masker.load_state_dict(state["models"]["masker"])
        masker.to(device).eval()
    return TrainedRun(
        classifier=classifier.to(device).eval(),
        masker=masker,
        classes=state["classes"],
        spec=state["spec"],
        identity=state["identity"],
        step=state["step"],
        val_accuracy=state["val_accuracy"],
    )
