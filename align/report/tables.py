"""The paper's tables from the collected evaluations: each table's rows, columns and cells, and
along which axis its best value is sought (written out by `align.report.table_files`).

Every cell is a `Summary` over seeds: `mean ± h (n=k)`, h the half-width of the 95% Student t
interval of the mean over the k seeds (`mean (n=1, no interval)` for one seed), or the reason it
could not be computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from align.experiment import ABLATION_ROWS, display_name, is_ablation
from align.report.collect import Evaluations, MetricPath, SelectedSteps, Summary


@dataclass(frozen=True)
class Metric:
    label: str
    path: MetricPath
    higher_is_better: bool = True
    ranked: bool = True
    """False for a descriptive number that no single direction makes better: never bold."""


ID_METRICS = (
    Metric("Acc", ("accuracy",)),
    Metric("AUC", ("auc",)),
    Metric("Suff", ("sufficiency",), higher_is_better=False),
    Metric("Comp", ("comprehensiveness",)),
)
MASK_METRICS = (
    Metric("IoU", ("iou",)),
    Metric("Dice", ("dice",)),
    Metric("Pointing", ("pointing_game",)),
    # Inside and outside only mean something together (their gap), and the all-ones reference
    # tops "Inside" by construction: descriptive, not ranked, like the spread.
    Metric("Inside", ("inside",), ranked=False),
    Metric("Outside", ("outside",), ranked=False),
    Metric("Spread", ("spread",), ranked=False),
)
ID_CAPTION = (
    "Acc and AUC (macro one-vs-rest) in %; Suff and Comp: ERASER sufficiency and"
    " comprehensiveness (AOPC, percentage points) of the predicted class's Grad-CAM; lower Suff"
    " and higher Comp are better."
)


@dataclass(frozen=True)
class Column:
    key: str
    """The header, e.g. `gradient/Acc`; also the key in the metrics JSON."""
    higher_is_better: bool = True
    ranked: bool = True
    """Whether the Markdown bolds its best value."""


@dataclass(frozen=True)
class Row:
    key: str
    """A stable id for the metrics JSON, e.g. `erm` or `gradient->noise`."""
    labels: tuple[str, ...]
    """The index cells, e.g. ("ERM",) or ("gradient", "noise")."""
    cells: dict[str, Summary]
    steps: str = ""
    """The checkpoint steps the row's runs selected, for the CSV (empty: not a trained row)."""


@dataclass
class Table:
    name: str
    """The file stem under results/, e.g. `id_table`."""
    title: str
    caption: str
    index: tuple[str, ...]
    columns: list[Column]
    rows: list[Row]
    best_along: Literal["column", "row"] = "column"
    notes: list[str] = field(default_factory=list)
    """Lines printed under the Markdown table (e.g. which runs a row was read from)."""
    selected: dict[str, dict[str, SelectedSteps]] = field(default_factory=dict)
    """Method label -> train domain -> the checkpoint steps its runs selected, printed as a
    second small table under the Markdown table."""


# --- layout ------------------------------------------------------------------------------------


def main_methods(evaluations: Evaluations) -> list[str]:
    """The configured methods of Tables 1 and 3 (everything but the ablations), in grid order."""
    return [m for m in evaluations.params.grid.methods if not is_ablation(m)]


def method_notes(evaluations: Evaluations, methods: list[str]) -> list[str]:
    return [evaluations.notes[m] for m in methods if m in evaluations.sources and
            m in evaluations.notes]


def _id_columns(evaluations: Evaluations) -> list[Column]:
    return [
        Column(f"{domain}/{metric.label}", metric.higher_is_better)
        for domain in evaluations.train_domains
        for metric in ID_METRICS
    ]


def _id_row(evaluations: Evaluations, method: str) -> Row:
    cells = {
        f"{domain}/{metric.label}": evaluations.summary(method, domain, domain, metric.path)
        for domain in evaluations.train_domains
        for metric in ID_METRICS
    }
    steps = _steps_text({
        domain: evaluations.selected_steps(method, domain) for domain in evaluations.train_domains
    })
    return Row(method, (display_name(method),), cells, steps)


def _selected(evaluations: Evaluations, methods: list[str]) -> dict[str, dict[str, SelectedSteps]]:
    """The Markdown step table: methods whose runs exist (configured or standing in), by domain."""
    return {
        display_name(method): {
            domain: evaluations.selected_steps(method, domain)
            for domain in evaluations.train_domains
        }
        for method in methods
        if method in evaluations.sources
    }


def _steps_text(by_name: dict[str, SelectedSteps]) -> str:
    """`gradient: 250, 300 (seeds 0, 1; selectable from 101); noise: ...` for a CSV cell."""
    parts = []
    for name, selected in by_name.items():
        seeds = ", ".join(map(str, selected.seeds))
        first = "" if selected.first_selectable is None else (
            f"; selectable from {selected.first_selectable}"
        )
        parts.append(f"{name}: {selected.text()} (seeds {seeds}{first})")
    return "; ".join(parts)


def id_table(evaluations: Evaluations) -> Table:
    """Table 1: a row per configured method (ablations aside), Acc/AUC/Suff/Comp per domain,
    each method trained and tested on the same domain."""
    methods = main_methods(evaluations)
    return Table(
        name="id_table",
        title=f"Table 1: in-distribution performance on {evaluations.dataset}",
        caption=ID_CAPTION,
        index=("Method",),
        columns=_id_columns(evaluations),
        rows=[_id_row(evaluations, method) for method in methods],
        notes=method_notes(evaluations, methods),
        selected=_selected(evaluations, methods),
    )


def ablation_table(evaluations: Evaluations) -> Table:
    """Table 2: w/o EG, m-SAM, m-Gray, m-GT and ALIGN, laid out as Table 1."""
    return Table(
        name="ablation_table",
        title=f"Table 2: ablations of ALIGN's masker on {evaluations.dataset}",
        caption=ID_CAPTION,
        index=("Method",),
        columns=_id_columns(evaluations),
        rows=[_id_row(evaluations, method) for method in ABLATION_ROWS],
        notes=method_notes(evaluations, list(ABLATION_ROWS)),
        selected=_selected(evaluations, list(ABLATION_ROWS)),
    )


def ood_table(evaluations: Evaluations) -> Table:
    """Table 3: a row per (train domain, other test domain), a column of accuracy per method."""
    methods = main_methods(evaluations)
    rows = [
        Row(
            f"{train}->{test}",
            (train, test),
            {
                display_name(method): evaluations.summary(method, train, test, ("accuracy",))
                for method in methods
            },
            _steps_text({
                display_name(method): evaluations.selected_steps(method, train)
                for method in methods
            }),
        )
        for train in evaluations.train_domains
        for test in evaluations.target_domains
        if test != train
    ]
    notes = method_notes(evaluations, methods)
    if not rows:
        notes.append("No out-of-distribution pair: the dataset has a single domain.")
    return Table(
        name="ood_table",
        title=f"Table 3: out-of-distribution accuracy (%) on {evaluations.dataset}",
        caption="Trained on one domain, tested on another without retraining.",
        index=("Train on", "Test on"),
        columns=[Column(display_name(method)) for method in methods],
        rows=rows,
        best_along="row",
        notes=notes,
        selected=_selected(evaluations, methods),
    )


def mask_quality_table(evaluations: Evaluations) -> Table:
    """Maps against the ground truth: ALIGN's masker, the uniform reference, SAM, and each
    method's Grad-CAM; per domain IoU, Dice, pointing game, mean inside and outside the object,
    and spread, on the test split of the training domain. Spread needs no ground truth, so it is
    filled on every dataset."""
    domains = evaluations.train_domains
    grid = list(evaluations.params.grid.methods)
    masker_first = ["align", *[m for m in grid if m != "align"]]

    def source_row(key: str, label: str, source: str, methods: list[str]) -> Row:
        cells = {
            f"{domain}/{metric.label}": evaluations.source_summary(
                domain, ("mask_quality", source, *metric.path), methods
            )
            for domain in domains
            for metric in MASK_METRICS
        }
        return Row(key, (label,), cells)

    def gradcam_row(method: str) -> Row:
        cells = {
            f"{domain}/{metric.label}": evaluations.summary(
                method, domain, domain, ("mask_quality", "gradcam", *metric.path)
            )
            for domain in domains
            for metric in MASK_METRICS
        }
        return Row(f"gradcam_{method}", (f"Grad-CAM ({display_name(method)})",), cells)

    rows = [
        source_row("masker", "Masker (ALIGN)", "masker", masker_first),
        source_row("uniform", "Uniform mask (all ones)", "uniform", masker_first),
        source_row("sam", "SAM", "sam", grid),
        *[gradcam_row(method) for method in grid],
    ]
    return Table(
        name="mask_quality",
        title=f"Mask quality (against the ground-truth object masks) on {evaluations.dataset}",
        caption=(
            "On the test split of the training domain, in %: IoU (map thresholded at 0.5), soft"
            " Dice, pointing game, the map's mean value inside the object and outside it, and its"
            " spread (per-image standard deviation of the map over its"
            " pixels, averaged over images: 0 for a uniform map, 50 at most; no ground truth"
            " needed). Grad-CAM of the predicted class. The uniform mask is the all-ones map,"
            " the best any constant map scores (a constant below 0.5 has IoU 0): its IoU is the"
            " object's area, inside = outside and spread 0, so a masker that finds the object"
            " beats its IoU and has inside well above outside. Inside, outside and spread are"
            " descriptive, never bold."
        ),
        index=("Mask",),
        columns=[
            Column(f"{d}/{metric.label}", metric.higher_is_better, metric.ranked)
            for d in domains
            for metric in MASK_METRICS
        ],
        rows=rows,
    )


ATTENTION_REGIONS = (("object", "Object"), ("shortcut", "Shortcut"), ("elsewhere", "Elsewhere"))
"""The `attention` keys of an eval record and their column labels (`align.metrics.attention`)."""
FIXED_MAPS = (
    ("masker", "Masker (ALIGN)"),
    ("gt", "GT object mask (m-GT's target)"),
    ("gray", "Gray(x) (m-Gray's target)"),
    ("sam", "SAM"),
    ("uniform", "Uniform map (the regions' areas)"),
)
"""Maps that do not depend on the evaluated classifier, after the Grad-CAM rows."""


def attention_methods(evaluations: Evaluations) -> list[str]:
    """The configured methods and Table 2's rows whose runs exist, in grid order."""
    grid = list(evaluations.params.grid.methods)
    return grid + [m for m in ABLATION_ROWS if m not in grid and m in evaluations.sources]


def attention_table(evaluations: Evaluations) -> Table:
    """Where each map puts its mass: per training domain, the share on the object, on the
    shortcut and elsewhere of every method's Grad-CAM and of the fixed maps, over seeds."""
    domains = evaluations.train_domains
    methods = attention_methods(evaluations)
    masker_first = ["align", *[m for m in methods if m != "align"]]

    def gradcam_row(method: str) -> Row:
        return Row(f"gradcam_{method}", (f"Grad-CAM ({display_name(method)})",), {
            f"{domain}/{label}": evaluations.summary(
                method, domain, domain, ("attention", "gradcam", key)
            )
            for domain in domains
            for key, label in ATTENTION_REGIONS
        })

    def fixed_row(source: str, label: str) -> Row:
        return Row(source, (label,), {
            f"{domain}/{region}": evaluations.source_summary(
                domain, ("attention", source, key), masker_first
            )
            for domain in domains
            for key, region in ATTENTION_REGIONS
        })

    return Table(
        name="attention",
        title=f"Where each map looks on {evaluations.dataset}: object, shortcut or elsewhere",
        caption=(
            "On the test split of the training domain, in %: the share of each map's mass on the"
            " object, on the shortcut (the spurious cue's pixels off the object) and elsewhere,"
            " per image, averaged over images; the three sum to 100. Grad-CAM of the predicted"
            " class. A classifier whose Grad-CAM sits on the shortcut reads the shortcut. The"
            " uniform map's shares are the regions' areas: a map above them on a region favours"
            " it. Descriptive, never bold."
        ),
        index=("Map",),
        columns=[
            Column(f"{d}/{label}", ranked=False) for d in domains for _, label in ATTENTION_REGIONS
        ],
        rows=[*[gradcam_row(m) for m in methods],
              *[fixed_row(source, label) for source, label in FIXED_MAPS]],
    )


TABLE_BUILDERS: tuple[Callable[[Evaluations], Table], ...] = (
    id_table,
    ablation_table,
    ood_table,
    mask_quality_table,
    attention_table,
)
