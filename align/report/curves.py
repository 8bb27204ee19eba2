"""Learning curves of every configured run, from the DVCLive files training writes, methods and
seeds overlaid: `results/curves.csv` (long form, for `dvc plots`) and one figure per metric for
the results page.

Training logs `train/<loss term>` every step and `val/accuracy` (%) every `train.eval_every`
steps under `<run>/dvclive/plots/metrics/<metric>.tsv` (columns `step` and the metric's last name;
steps count from 1, as `selected_step` does). Out-of-distribution accuracy is not logged during
training: it is measured once per run, at the selected checkpoint, by the evaluate stage; it is
added as `eval/ood_accuracy` (the mean over the run's test domains, at its selected step) and
drawn as a cross on the validation-accuracy figure. Any other metric a run logs gets its own
figure.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from align.config import Params
from align.experiment import display_name
from align.report.collect import Address, Evaluations
from align.report.figures import png_metadata
from align.report.tabular import csv_text
from align.report.verdict import OOD_ACCURACY, method_cells, unit_values
from align.runs import RunSpec
from align.stages import grid_jobs

CURVES_DATA = "curves.csv"
CURVE_COLUMNS = ("domain", "method", "seed", "metric", "step", "value")
DVCLIVE_METRICS = Path("dvclive") / "plots" / "metrics"
VALIDATION = "val/accuracy"
OOD = "eval/ood_accuracy"
TITLES = {
    VALIDATION: "Validation accuracy (%) of the training domain; x: OOD test accuracy at the"
                " selected step",
    OOD: "OOD test accuracy (%) at the selected step",
}
METHOD_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf", "#000000")
SEED_STYLES = ("-", "--", ":", "-.")
FIGURE_DPI = 110
PANEL_WIDTH, PANEL_HEIGHT, LEGEND_WIDTH = 3.6, 2.4, 1.6
"""Inches: a panel per training domain, then the legend."""


@dataclass(frozen=True)
class Curve:
    """One metric of one run: `values[i]` logged at training step `steps[i]`."""

    domain: str
    method: str
    seed: int
    metric: str
    steps: tuple[int, ...]
    values: tuple[float, ...]


def configured_runs(params: Params, runs_root: Path) -> list[tuple[RunSpec, Path]]:
    """(run, its folder) of every configured training job, in the grid's order."""
    specs = [RunSpec(params.dataset, job.domain, job.method, job.seed)
             for job in grid_jobs(params) if job.stage == "train"]
    return [(spec, spec.named_dir(runs_root)) for spec in specs]


def curve_files(run_dir: Path) -> list[Path]:
    """A run's DVCLive metric tables (none before it is trained)."""
    return sorted((run_dir / DVCLIVE_METRICS).rglob("*.tsv"))


def read_curve(path: Path, run_dir: Path) -> tuple[str, tuple[int, ...], tuple[float, ...]]:
    """(metric name as DVCLive logged it, e.g. `train/ce`, steps, values) of one TSV."""
    metric = path.relative_to(run_dir / DVCLIVE_METRICS).with_suffix("").as_posix()
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    column = path.stem  # DVCLive names the value column after the metric's last part
    return (metric, tuple(int(row["step"]) for row in rows),
            tuple(float(row[column]) for row in rows))


def selected_step(evaluations: Evaluations, spec: RunSpec) -> int | None:
    """The step of the checkpoint a run's evaluations measured, from its first eval record (or
    its training metrics when it has none)."""
    for target in [spec.domain, *evaluations.target_domains]:
        record = evaluations.records.get(Address(spec.method, spec.domain, spec.seed, target))
        if isinstance(record, dict) and record.get("selected_step") is not None:
            return int(record["selected_step"])
    step = evaluations.training.get((spec.method, spec.domain, spec.seed), {}).get(
        "selected_step")
    return None if step is None else int(step)


def read_curves(params: Params, runs_root: Path, evaluations: Evaluations) -> list[Curve]:
    """Every logged curve of every configured run, and each run's OOD accuracy point: the
    verdict's value of the run (the mean over its test domains, none while one is missing)."""
    curves = []
    ood_means: dict[str, dict[tuple[str, int], float | str]] = {}
    for spec, run_dir in configured_runs(params, runs_root):
        for path in curve_files(run_dir):
            metric, steps, values = read_curve(path, run_dir)
            curves.append(Curve(spec.domain, spec.method, spec.seed, metric, steps, values))
        if spec.method not in ood_means:
            ood_means[spec.method] = unit_values(
                method_cells(evaluations, spec.method, OOD_ACCURACY))
        mean = ood_means[spec.method].get((spec.domain, spec.seed))
        step = selected_step(evaluations, spec)
        if isinstance(mean, float) and step is not None:
            curves.append(Curve(spec.domain, spec.method, spec.seed, OOD, (step,), (mean,)))
    return curves


def curves_csv(curves: list[Curve], provenance: dict[str, Any]) -> str:
    """The curves in long form, a row per (run, metric, step), provenance on every row."""
    rows = [
        [curve.domain, curve.method, curve.seed, curve.metric, step, f"{value:.6g}"]
        for curve in curves
        for step, value in zip(curve.steps, curve.values, strict=True)
    ]
    return csv_text(CURVE_COLUMNS, rows, provenance)


def metric_order(curves: list[Curve]) -> list[str]:
    """The metrics to draw: validation accuracy first, other non-loss metrics, then the losses;
    the OOD points are drawn on the validation figure, or alone when there is none."""
    metrics = {curve.metric for curve in curves}
    drawn = sorted(metrics - {OOD}, key=lambda m: (m != VALIDATION, m.startswith("train/"), m))
    if OOD in metrics and VALIDATION not in metrics:
        drawn.insert(0, OOD)
    return drawn


def metric_title(metric: str) -> str:
    if metric in TITLES:
        return TITLES[metric]
    if metric.startswith("train/"):
        return f"Training loss term {metric.removeprefix('train/')}, per step"
    return metric


def curve_figure(curves: list[Curve], metric: str, methods: list[str], domains: list[str],
                 provenance: dict[str, Any]) -> Figure:
    """One figure of `metric`: a panel per training domain, a line per run, coloured by method,
    a line style per seed; on validation accuracy a cross per run at its selected step marks its
    OOD test accuracy."""
    colours = {m: METHOD_COLOURS[i % len(METHOD_COLOURS)] for i, m in enumerate(methods)}
    seeds = sorted({curve.seed for curve in curves})
    styles = {s: SEED_STYLES[i % len(SEED_STYLES)] for i, s in enumerate(seeds)}
    figure = Figure(figsize=(PANEL_WIDTH * len(domains) + LEGEND_WIDTH, PANEL_HEIGHT),
                    dpi=FIGURE_DPI, layout="constrained")
    axes = figure.subplots(1, len(domains), squeeze=False, sharey=True)[0]
    for ax, domain in zip(axes, domains, strict=True):
        for curve in curves:
            if curve.domain != domain:
                continue
            if curve.metric == metric:
                ax.plot(curve.steps, curve.values, styles[curve.seed], marker=".",
                        markersize=3, linewidth=1, color=colours[curve.method])
            elif curve.metric == OOD and metric == VALIDATION:
                ax.plot(curve.steps, curve.values, "x", markersize=6,
                        color=colours[curve.method])
        ax.set_title(f"trained on {domain}", fontsize=8)
        ax.set_xlabel("training step", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric, fontsize=7)
    handles = [Line2D([], [], color=colours[m], label=display_name(m)) for m in methods]
    handles += [Line2D([], [], color="0.3", linestyle=styles[s], label=f"seed {s}")
                for s in seeds]
    if metric == VALIDATION:
        handles.append(Line2D([], [], color="0.3", marker="x", linestyle="",
                              label="OOD test acc."))
    figure.legend(handles=handles, loc="outside right center", fontsize=6, frameon=False)
    figure.suptitle(f"git {provenance['git_commit']} | params {provenance['params_hash']}",
                    fontsize=5, color="0.4", x=0.01, ha="left")
    return figure


def figure_png(figure: Figure, provenance: dict[str, Any]) -> bytes:
    """`figure` as PNG bytes, provenance in its metadata, as the report's figures."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata=png_metadata(provenance))
    return buffer.getvalue()


def curve_pngs(curves: list[Curve], methods: list[str], provenance: dict[str, Any]
               ) -> dict[str, bytes]:
    """{metric: PNG} of every metric in `metric_order`, runs of `methods` in that order."""
    domains = list(dict.fromkeys(curve.domain for curve in curves))
    ordered = [m for m in methods if any(c.method == m for c in curves)]
    return {metric: figure_png(curve_figure(curves, metric, ordered, domains, provenance),
                               provenance)
            for metric in metric_order(curves)}
