"""Accuracy and macro one-vs-rest AUC of a classifier on a test split, both in percent.

AUC follows the paper's tables: one-vs-rest on the softmax probabilities, averaged over classes
(macro), by scikit-learn's `roc_auc_score` (ties counted as half).

Rule for classes absent from a split (a small domain can miss a class): a class with no positive
sample has no ROC curve, so it is left out of the macro average, and the summary lists the classes
averaged over. With fewer than two classes present no class has negatives either; the AUC is then
NaN and `ClassificationSummary.auc_note` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor


def accuracy(scores: Tensor, labels: Tensor) -> float:
    """Percent of samples whose highest score (logit or probability, (N,C)) is their label (N,).

    NaN for an empty split. A tie between scores goes to the lowest class index (torch.argmax).
    """
    if labels.numel() == 0:
        return math.nan
    return (scores.argmax(1) == labels.to(scores.device)).double().mean().item() * 100


def _check_labels(labels: Tensor, num_classes: int) -> None:
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.unique().tolist()}")


def auc_per_class(probs: Tensor, labels: Tensor) -> Tensor:
    """One-vs-rest AUC of each class, in percent: probs (N,C), labels (N,) -> (C,) float64 (CPU).

    NaN for a class without positives, or without negatives (the only class present).
    """
    scores, classes = probs.detach().double().cpu().numpy(), labels.detach().cpu().numpy()
    num_classes = scores.shape[1]
    _check_labels(labels, num_classes)
    aucs = np.full(num_classes, math.nan)
    present = np.unique(classes)
    if len(present) >= 2:
        # One-vs-rest over the classes present: each one's indicator against its score column.
        # (`multi_class="ovr"` does the same, but refuses a score column of an absent class.)
        aucs[present] = 100 * roc_auc_score(classes[:, None] == present, scores[:, present],
                                            average=None)
    return torch.from_numpy(aucs)


def macro_auc_ovr(probs: Tensor, labels: Tensor) -> float:
    """Macro one-vs-rest AUC in percent over the classes present in `labels` (module rule).

    probs: softmax probabilities (N,C); labels (N,). NaN when fewer than two classes are present.
    """
    per_class = auc_per_class(probs, labels)
    defined = per_class[~per_class.isnan()]
    return defined.mean().item() if defined.numel() else math.nan


@dataclass(frozen=True)
class ClassificationSummary:
    """Accuracy and macro AUC (percent) of one split, with what the AUC was averaged over."""

    accuracy: float
    auc: float
    num_samples: int
    auc_classes: tuple[int, ...]
    """Classes averaged over for the AUC: those with at least one positive in the split."""
    auc_note: str = ""
    """Empty, or why the AUC is NaN or leaves classes out."""
    class_counts: tuple[int, ...] = ()
    """Samples per class in the split."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None (JSON has no NaN)."""

        def finite(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "accuracy": finite(self.accuracy),
            "auc": finite(self.auc),
            "num_samples": self.num_samples,
            "auc_classes": list(self.auc_classes),
            "auc_note": self.auc_note,
            "class_counts": list(self.class_counts),
        }


def classification_summary(logits: Tensor, labels: Tensor) -> ClassificationSummary:
    """Accuracy and macro OvR AUC (on softmax probabilities) of logits (N,C) for labels (N,)."""
    logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
    probs = torch.softmax(logits, dim=1)
    num_classes = probs.shape[1]
    _check_labels(labels, num_classes)
    counts = torch.bincount(labels, minlength=num_classes)
    present = tuple(int(c) for c in torch.nonzero(counts).flatten())
    absent = [c for c in range(num_classes) if c not in present]
    if len(present) < 2:
        note = f"AUC undefined: {len(present)} class(es) present in {labels.numel()} samples"
    elif absent:
        note = f"classes {absent} absent from the split, left out of the macro AUC"
    else:
        note = ""
    return ClassificationSummary(
        accuracy=accuracy(logits, labels),
        auc=macro_auc_ovr(probs, labels),
        num_samples=labels.numel(),
        auc_classes=present if len(present) >= 2 else (),
        auc_note=note,
        class_counts=tuple(int(n) for n in counts),
    )


class ClassificationAccumulator:
    """Collects logits and labels batch by batch, on the CPU, for one summary of the split."""

    def __init__(self) -> None:
        self._logits: list[Tensor] = []
        self._labels: list[Tensor] = []

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: logits (B,C), labels (B,)."""
        self._logits.append(logits.detach().float().cpu())
        self._labels.append(labels.detach().cpu())

    def summary(self) -> ClassificationSummary:
        if not self._logits:
            raise ValueError("no batches were added: the split is empty")
        return classification_summary(torch.cat(self._logits), torch.cat(self._labels))
