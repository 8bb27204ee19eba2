"""Fig. 2's "ALIGN masker" bar, the one number of the report that is computed, not read: every
method's classifier on test images whose background outside the masker of the ALIGN run of the
same domain and seed is blurred."""

from __future__ import annotations

from typing import Any

from align.device import pick_device
from align.errors import UserError
from align.evaluate import masker_blur_accuracy
from align.models.trained import BEST_MODEL, load_trained
from align.report.collect import Evaluations


def add_masker_blur(evaluations: Evaluations) -> None:
    """Fig. 2's "ALIGN masker" bar for every method: its classifier on test images whose
    background outside the masker of the ALIGN run of the same domain and seed is blurred.

    Computed here rather than in each run's evaluation, so that retraining ALIGN reruns only
    ALIGN's jobs and the report, never the other methods' evaluations.
    """
    device = pick_device()
    maskers: dict[tuple[str, int], Any] = {}
    for address, record in evaluations.records.items():
        if isinstance(record, str) or address.train_domain != address.target_domain:
            continue
        if "masker" in record.get("background_blur", {}):
            continue
        key = (address.train_domain, address.seed)
        if key not in maskers:
            align_dir = evaluations.run_dir("align", *key)
            maskers[key] = f"no trained ALIGN run at {align_dir} (add align to grid.methods)"
            if (align_dir / BEST_MODEL).is_file():
                try:
                    maskers[key] = load_trained(align_dir, device)
                except UserError as error:
                    maskers[key] = str(error)
        masker_run = maskers[key]
        if isinstance(masker_run, str) or masker_run.masker is None:
            reason = masker_run if isinstance(masker_run, str) else "the ALIGN run has no masker"
            record.setdefault("unavailable", {})["masker"] = reason
            continue
        run_dir = evaluations.run_dir(address.method, *key)
        if not (run_dir / BEST_MODEL).is_file():
            record.setdefault("unavailable", {})["masker"] = f"{run_dir / BEST_MODEL} missing"
            continue
        try:
            run = load_trained(run_dir, device)
        except UserError as error:
            record.setdefault("unavailable", {})["masker"] = str(error)
            continue
        record.setdefault("background_blur", {})["masker"] = masker_blur_accuracy(
            evaluations.params, run, masker_run, evaluations.dataset, address.train_domain
        )
