"""The evaluate stage's JSONs of the configured grid, read into one structure, and seed summaries.

A result is addressed by (method, train domain, seed, target domain); its file is
`<runs>/<dataset>/<train domain>/<method>/seed<k>/eval/<target domain>.json`. Every configured
address gets either the loaded record or one line saying why there is none (not trained, not
evaluated, not in `grid.methods`, SAM masks unavailable, ...), so that a table cell can always be
filled with a number or with a reason.

An ablation row that is not in `grid.methods` is still filled when another configured method is
the same experiment (`wo_eg` is `align` with lambda3 = 0, see `align.methods.wo_eg`): its runs
stand for it, as the pipeline trains such a pair once.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.config import Params
from align.data.registry import DATASETS
from align.data.split import split_path
from align.experiment import configured_methods, method_source
from align.masks.layout import sam_masks_available
from align.methods.base import METHODS
from align.models.trained import BEST_MODEL
from align.report.statistics import CONFIDENCE, t_half_width
from align.report.tabular import csv_text
from align.runs import TRAINING_METRICS_FILE, RunSpec, eval_path

MEASURED = ("accuracy", "auc", "sufficiency", "comprehensiveness", "mask_quality",
            "attention", "background_blur")
"""The measurements in an eval record; nested ones are named by their path with dots
(`mask_quality.gradcam.iou`)."""
MEASUREMENT_COLUMNS = ("method", "train_domain", "target_domain", "seed", "in_distribution",
                       "metric", "value")


Record = dict[str, Any]
MetricPath = tuple[str, ...]
"""Where a number sits in an eval record, e.g. ("mask_quality", "masker", "iou")."""


@dataclass(frozen=True)
class Summary:
    """One number over seeds: the per-seed values found and why the others are missing.

    `expected` is the number of configured seeds; `missing` holds one reason per seed without a
    value, as (seed, reason).
    """

    values: tuple[float, ...]
    expected: int
    missing: tuple[tuple[int, str], ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def half_width(self) -> float | None:
        """Half-width of the 95% Student t interval of the mean over seeds; None below two."""
        return t_half_width(self.values, CONFIDENCE)

    @property
    def reason(self) -> str:
        """Why seeds are missing: one line, each distinct reason once."""
        reasons = list(dict.fromkeys(reason for _, reason in self.missing))
        if len(reasons) <= 1:
            return "".join(reasons)
        return "; ".join(f"seed {seed}: {reason}" for seed, reason in self.missing)

    def count_text(self) -> str:
        """`n=k`, `n=k of K` when seeds are missing, and `no interval` for a single seed."""
        count = f"n={self.n}" if self.n == self.expected else f"n={self.n} of {self.expected}"
        return count if self.half_width is not None else f"{count}, no interval"

    def value_text(self, digits: int = 2) -> str:
        """`mean ± half-width` of the 95% interval, or the mean alone without an interval."""
        value = f"{self.mean:.{digits}f}"
        if self.half_width is not None:
            value += f" ± {self.half_width:.{digits}f}"
        return value

    def text(self, digits: int = 2) -> str:
        """`mean ± half-width (n=k)`, `mean (n=1, no interval)`; the reason when no seed is
        left."""
        if not self.values:
            return self.reason or "no value"
        return f"{self.value_text(digits)} ({self.count_text()})"


@dataclass(frozen=True)
class SelectedSteps:
    """Which checkpoint each seed's run kept: the training step of the model selected on
    validation accuracy, per configured seed (None where unknown: run not trained or evaluated),
    and the first step the method may select at all (after its warm-up; None without the run's
    metrics.json)."""

    seeds: tuple[int, ...]
    steps: tuple[int | None, ...]
    first_selectable: int | None

    def text(self) -> str:
        """`250, 300, 300`: the steps in seed order, `n/a` for an unknown one."""
        return ", ".join("n/a" if step is None else str(step) for step in self.steps)


@dataclass(frozen=True)
class Address:
    method: str
    train_domain: str
    seed: int
    target_domain: str


@dataclass
class Evaluations:
    """Every configured eval record of a grid, or why it is missing."""

    params: Params
    runs_root: Path
    methods: list[str]
    """`grid.methods` and Table 2's rows, in that order, each once."""
    train_domains: list[str]
    target_domains: list[str]
    seeds: list[int]
    records: dict[Address, Record | str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    """Method name -> the configured method whose runs stand for it (itself when configured)."""
    notes: dict[str, str] = field(default_factory=dict)
    """Method name -> a note to print under tables (e.g. `w/o EG` read from m-Gray's runs)."""
    files: dict[Address, Path] = field(default_factory=dict)
    training: dict[tuple[str, str, int], Record] = field(default_factory=dict)
    """(method, train domain, seed) -> the run's training `metrics.json`, where readable."""

    @property
    def dataset(self) -> str:
        return self.params.dataset

    def run_dir(self, method: str, train_domain: str, seed: int) -> Path:
        source = self.sources.get(method, method)
        return RunSpec(self.dataset, train_domain, source, seed).named_dir(self.runs_root)

    def record(self, address: Address) -> Record | str:
        return self.records[address]

    def summary(
        self, method: str, train_domain: str, target_domain: str, path: MetricPath
    ) -> Summary:
        """The metric at `path` of `method` trained on `train_domain`, tested on
        `target_domain`, over the configured seeds."""
        values, missing = [], []
        for seed in self.seeds:
            found = self.record(Address(method, train_domain, seed, target_domain))
            value = found if isinstance(found, str) else metric_value(found, path)
            if isinstance(value, str):
                missing.append((seed, value))
            else:
                values.append(value)
        return Summary(tuple(values), len(self.seeds), tuple(missing))

    def selected_steps(self, method: str, train_domain: str) -> SelectedSteps:
        """The checkpoint steps `method`'s runs on `train_domain` selected, over the seeds: the
        eval record's `selected_step` (the step stored in the model it evaluated), else the one
        in the run's metrics.json."""
        steps, firsts = [], []
        for seed in self.seeds:
            record = self.record(Address(method, train_domain, seed, train_domain))
            training = self.training.get((method, train_domain, seed), {})
            step = record.get("selected_step") if isinstance(record, dict) else None
            steps.append(training.get("selected_step") if step is None else step)
            firsts.append(training.get("first_selectable_step"))
        known = [first for first in firsts if first is not None]
        return SelectedSteps(tuple(self.seeds), tuple(steps), known[0] if known else None)

    def source_summary(
        self, domain: str, path: MetricPath, methods: Sequence[str]
    ) -> Summary:
        """A metric that does not depend on the evaluated classifier (the quality of SAM's or a
        masker's masks): per seed, the first of `methods`' in-distribution records that holds it;
        the reason given by the first method when none does."""
        values, missing = [], []
        for seed in self.seeds:
            reasons = []
            for method in methods:
                found = self.record(Address(method, domain, seed, domain))
                value = found if isinstance(found, str) else metric_value(found, path)
                if not isinstance(value, str):
                    values.append(value)
                    break
                reasons.append(value)
            else:
                missing.append((seed, reasons[0] if reasons else "no method configured"))
        return Summary(tuple(values), len(self.seeds), tuple(missing))

    def input_provenance(self) -> dict[str, dict[str, Any]]:
        """The git commit and evaluation identity each eval record was written from, by file."""
        return {
            str(self.files[address]): {
                "git_commit": record.get("git_commit"),
                "identity_key": record.get("identity_key"),
            }
            for address, record in self.records.items()
            if isinstance(record, dict) and address in self.files
        }


def metric_value(record: Record, path: MetricPath) -> float | str:
    """The number at `path` in an eval record, or why the record has none."""
    node: Any = record
    for part in path:
        if not isinstance(node, dict) or node.get(part) is None:
            return missing_reason(record, path)
        node = node[part]
    value = float(node)
    if math.isnan(value):
        if path[0] == "mask_quality":
            return "no test image has a ground-truth object"
        return f"{'.'.join(path)} is NaN in the eval record"
    return value


def missing_reason(record: Record, path: MetricPath) -> str:
    unavailable = record.get("unavailable") or {}
    if path[0] == "auc" and record.get("auc_note"):
        return str(record["auc_note"])
    if path[0] in ("sufficiency", "comprehensiveness") and not record.get("in_distribution"):
        return f"{path[0]} is measured in-distribution only"
    for key in (*path[1:2], path[0]):
        if key in unavailable:
            return str(unavailable[key])
    return f"{'.'.join(path)} not in the eval record"


def method_unavailable(params: Params, method: str) -> str | None:
    """Why `method` cannot be trained on the dataset at all (its masks do not exist), or None."""
    source = METHODS.get(method).mask_source
    if source == "gt" and not DATASETS.get(params.dataset).has_masks:
        return f"{params.dataset} has no ground-truth masks"
    if source == "sam":
        available, reason = sam_masks_available(params, params.dataset)
        if not available:
            return reason
    return None


def target_domains(params: Params) -> list[str]:
    """Test domains: the training domains, then the dataset's other domains, as the split found
    them (the evaluate stage tests on those; a `folder` dataset may declare none), or as the
    configuration declares them before there is a split."""
    grid = list(params.grid.domains or [])
    split = split_path(params, params.dataset)
    found = list(json.loads(split.read_text())["domains"]) if split.is_file() else []
    return grid + [domain for domain in found or params.dataset_domains() if domain not in grid]


def read_record(path: Path, run_dir: Path) -> Record | str:
    """An eval record, or why there is none (run not trained, not evaluated, unreadable)."""
    if not path.is_file():
        if not (run_dir / BEST_MODEL).is_file():
            return f"not trained: {run_dir / BEST_MODEL} missing"
        return f"not evaluated: {path} missing"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return f"unreadable: {path} ({error.__class__.__name__})"
    if not isinstance(record, dict):
        return f"unreadable: {path} holds no JSON object"
    return record


def read_training_metrics(run_dir: Path) -> Record | None:
    """A run's training `metrics.json` (selected and first selectable step), or None when it is
    missing or unreadable (the tables then show the step as unknown)."""
    path = run_dir / TRAINING_METRICS_FILE
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def collect_evaluations(params: Params, runs_root: Path) -> Evaluations:
    """Read every eval record the configured grid (and Table 2) asks for."""
    evaluations = Evaluations(
        params=params,
        runs_root=Path(runs_root),
        methods=configured_methods(params),
        train_domains=list(params.grid.domains or []),
        target_domains=target_domains(params),
        seeds=list(params.grid.seeds),
    )
    for method in evaluations.methods:
        source, note = method_source(params, method)
        if note:
            evaluations.notes[method] = note
        if source is not None:
            evaluations.sources[method] = source
        for train_domain in evaluations.train_domains:
            for seed in evaluations.seeds:
                for target in evaluations.target_domains:
                    address = Address(method, train_domain, seed, target)
                    evaluations.records[address] = _locate(
                        evaluations, address, source, note
                    )
                if source is not None:
                    training = read_training_metrics(
                        evaluations.run_dir(method, train_domain, seed)
                    )
                    if training is not None:
                        evaluations.training[(method, train_domain, seed)] = training
    return evaluations


def _locate(
    evaluations: Evaluations, address: Address, source: str | None, note: str
) -> Record | str:
    params = evaluations.params
    if source is None:
        unavailable = method_unavailable(params, address.method)
        return f"{note} ({unavailable})" if unavailable else note
    run_dir = evaluations.run_dir(address.method, address.train_domain, address.seed)
    path = eval_path(run_dir, address.target_domain)
    found = read_record(path, run_dir)
    if isinstance(found, str):
        return method_unavailable(params, source) or found
    evaluations.files[address] = path
    return found


def measurements(evaluations: Evaluations) -> list[tuple[Address, str, float]]:
    """Every finite number the configured runs measured, as (address, metric, value): one per
    (run, target domain, metric), in grid order. A method that stands in for another (w/o EG read
    from m-Gray's runs) is left out: its runs are the other's rows."""
    found = []
    for address, record in evaluations.records.items():
        if isinstance(record, dict) and evaluations.sources.get(address.method) == address.method:
            found += [(address, name, value) for name, value in _numbers(record, MEASURED)]
    return found


def _numbers(node: Record, keys: Sequence[str], prefix: str = "") -> Iterator[tuple[str, float]]:
    for key in keys:
        value, name = node.get(key), f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numbers(value, list(value), f"{name}.")
        # Counts (`num_images`) describe a measurement, they are not one; NaN is no number.
        elif (isinstance(value, int | float) and not isinstance(value, bool)
              and not key.startswith("num_") and math.isfinite(value)):
            yield name, float(value)


def measurements_csv(evaluations: Evaluations, provenance: dict[str, Any]) -> str:
    """`measurements.csv`: `measurements` in long form, a row per (run, target domain, metric),
    with the git commit and params hash on every row."""
    rows = [
        [address.method, address.train_domain, address.target_domain, address.seed,
         address.train_domain == address.target_domain, name, f"{value:.10g}"]
        for address, name, value in measurements(evaluations)
    ]
    return csv_text(MEASUREMENT_COLUMNS, rows, provenance)
