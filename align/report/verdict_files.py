"""`results/verdict.{md,csv}` and the `headline` of `metrics.json`, from the comparisons of
`align.report.verdict`: the positive control's section, how the numbers were computed and the
rule, a table per metric with one sentence per method; the same as CSV rows, and the figures
`dvc metrics` compares across variants.
"""

from __future__ import annotations

import statistics
from typing import Any

from align.experiment import display_name
from align.report.collect import Evaluations, metric_value
from align.report.statistics import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    min_pairs,
)
from align.report.tabular import csv_number, csv_text, markdown_table
from align.report.verdict import (
    CONTROL_MIN_GAIN,
    MIN_UNITS,
    POSITIVE_CONTROL,
    REFERENCE,
    VERDICT_METRICS,
    Comparison,
    compared_methods,
    number_text,
    p_text,
)


def _control(found: list[Comparison]) -> Comparison | None:
    return next((c for c in found if c.kind == "control"), None)


def _mean(values: tuple[float, ...]) -> float | None:
    return statistics.fmean(values) if values else None


def _interval_text(c: Comparison) -> str:
    if c.interval is None:
        return "n/a"
    return f"[{number_text(c.interval[0], sign=True)}, {number_text(c.interval[1], sign=True)}]"


def _count(c: Comparison) -> str:
    return f"{c.n}" if c.n == c.configured else f"{c.n} of {c.configured}"


def method_text(evaluations: Evaluations) -> str:
    """How the numbers were computed, the unit and how many, the rule and Holm's correction,
    for verdict.md."""
    level = round(100 * CONFIDENCE)
    domains, seeds = len(evaluations.train_domains), len(evaluations.seeds)
    return (
        f"The unit is a trained model: one (train domain, seed) run of a method. Its test"
        f" domains share everything its seed decided, so they count as one piece of evidence,"
        f" not several. For out-of-distribution accuracy a unit's value is its mean over its test"
        f" domains (every configured domain other than its training domain); a unit missing any"
        f" of them is left out, and the table says how many and why. In-distribution metrics"
        f" have one value per unit. The grid configures {domains * seeds} trained models per"
        f" method ({domains} train domain{'s' * (domains != 1)} x {seeds}"
        f" seed{'s' * (seeds != 1)}); each row pairs ALIGN with one method on the same units."
        f" Difference: ALIGN minus the other method, in the metric's points. {level}% CI:"
        f" percentile bootstrap over the units (scipy.stats.bootstrap: {BOOTSTRAP_RESAMPLES:,}"
        f" resamples of the units with replacement, generator seed {BOOTSTRAP_SEED}). p (t):"
        f" two-sided paired t-test on"
        f" the units (scipy.stats.ttest_rel; it needs at least 2). p (Holm): p (t) adjusted by"
        f" Holm's step-down method over the comparisons of one metric (one family per metric;"
        f" a method read from another's runs, such as w/o EG, repeats that test and counts"
        f" once), so the chance of any false \"better\" or \"worse\" within a metric stays at"
        f" most {ALPHA:.2f}. p (Wilcoxon): two-sided signed-rank test (scipy.stats.wilcoxon,"
        f" zero differences kept in the ranking and their ranks dropped (Pratt); every"
        f" difference zero gives p = 1), a check beside the t-test that does not assume normal"
        f" differences, shown from {min_pairs(ALPHA)} units on, the fewest with which it can"
        f" reach p < {ALPHA:.2f}; n/a below.\n\n"
        f"Rule, alpha = {ALPHA:.2f}: \"ALIGN is better than X\" (or worse) only when p (Holm)"
        f" < {ALPHA:.2f} and the {level}% CI excludes 0, the side of 0 deciding which, in the"
        f" direction the metric calls better (lower sufficiency is better); otherwise \"no"
        f" detectable difference\". With fewer than {MIN_UNITS} trained models there is no"
        f" verdict (\"too few trained models\"): with 2 the t-test has one degree of freedom"
        f" and the bootstrap three possible resampled means.\n\n"
        f"Caveat: the units of one train domain share its training and test data, and few"
        f" units give the tests little power; add seeds (grid.seeds) or train domains"
        f" (grid.domains) to firm a verdict up. Read no verdict while the positive control"
        f" above fails."
    )


def control_markdown(control: Comparison | None) -> list[str]:
    """The positive control's section: what it asks, its numbers and whether it holds."""
    oracle, baseline = POSITIVE_CONTROL
    if control is not None:
        oracle, baseline = control.reference, control.other
    names = display_name(oracle), display_name(baseline)
    level = round(100 * CONFIDENCE)
    lines = [
        f"## Positive control: {names[0]} vs {names[1]}",
        "",
        f"Declared before any result, and outside every Holm family below: the oracle"
        f" {names[0]} (guided by the true object masks) must beat {names[1]} in"
        f" out-of-distribution accuracy (each trained model's mean over its test domains) by at"
        f" least {CONTROL_MIN_GAIN:g} points on average over the trained models, with a paired"
        f" t-test p < {ALPHA:.2f} (unadjusted: one pre-declared test) and a {level}% bootstrap"
        f" CI above 0. Otherwise the benchmark has not shown it can tell a method that uses the"
        f" object from one that does not.",
        "",
    ]
    if control is None:
        return [*lines, "No positive control was computed.", ""]
    if control.configured:
        lines += [
            markdown_table(
                ["trained models", f"{names[0]} mean", f"{names[1]} mean",
                 f"{names[0]} − {names[1]}", f"{level}% CI", "p (t)", "p (Wilcoxon)"],
                [[_count(control), number_text(_mean(control.reference_values)),
                  number_text(_mean(control.other_values)),
                  number_text(control.mean_difference, sign=True), _interval_text(control),
                  p_text(control.p_t), p_text(control.p_wilcoxon)]],
            ),
            "",
        ]
        if control.left_out and control.n:
            lines += [f"Left out: {control.configured - control.n} of {control.configured}"
                      f" trained models ({'; '.join(control.left_out)}).", ""]
    return [*lines, f"**{control.sentence()}**", ""]


def to_markdown(
    evaluations: Evaluations, found: list[Comparison], provenance: dict[str, Any]
) -> str:
    """verdict.md: the positive control, the method and rule, then a table per metric with one
    sentence per method."""
    lines = [f"# Verdict: ALIGN against each configured method on {evaluations.dataset}", ""]
    lines += control_markdown(_control(found))
    lines += ["## How to read the verdict", ""]
    if REFERENCE not in evaluations.sources:
        why = evaluations.notes.get(REFERENCE, "align not in grid.methods")
        lines += [f"Nothing to compare: {why} (add align to grid.methods).", ""]
    else:
        lines += [method_text(evaluations), ""]
    level = round(100 * CONFIDENCE)
    for metric in VERDICT_METRICS:
        rows = [c for c in found if c.metric == metric and c.kind == "align_vs"]
        if not rows:
            continue
        family = max(c.family_size for c in rows)
        lines += [
            f"## {metric.name[0].upper()}{metric.name[1:]}: {metric.direction}; unit ="
            f" {metric.unit_value}",
            "",
            f"Holm family: {family} test{'s' * (family != 1)}.",
            "",
        ]
        notes = []
        table = []
        for c in rows:
            table.append([
                display_name(c.other), _count(c), number_text(_mean(c.reference_values)),
                number_text(_mean(c.other_values)), number_text(c.mean_difference, sign=True),
                _interval_text(c), p_text(c.p_t), p_text(c.p_t_holm), p_text(c.p_wilcoxon),
                c.sentence(),
            ])
            if c.left_out and c.n:
                notes.append(f"{display_name(c.other)}: {c.configured - c.n} of {c.configured}"
                             f" trained models left out ({'; '.join(c.left_out)})")
        lines.append(markdown_table(
            ["ALIGN vs", "trained models", "ALIGN mean", "other mean", "ALIGN − other",
             f"{level}% CI", "p (t)", "p (Holm)", "p (Wilcoxon)", "verdict"], table))
        lines.append("")
        lines += [f"Left out: {note}  " for note in notes]
        if notes:
            lines.append("")
    stand_ins = [evaluations.notes[m] for m in compared_methods(evaluations)
                 if m in evaluations.notes]
    not_compared = [
        f"{display_name(m)} ({evaluations.notes.get(m, 'no runs')})"
        for m in evaluations.methods if m != REFERENCE and m not in evaluations.sources
    ]
    lines += [f"Note: {note}" for note in stand_ins]
    if not_compared and REFERENCE in evaluations.sources:
        lines.append(f"Not compared (no configured runs): {', '.join(not_compared)}.")
    lines += [
        "",
        f"Made by `align report` from git commit `{provenance['git_commit']}` and params.yaml"
        f" hash `{provenance['params_hash']}`.",
    ]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


CSV_COLUMNS = (
    "comparison", "metric", "higher_is_better", "reference", "method", "display_name", "n_units",
    "configured_units", "reference_mean", "method_mean", "mean_difference", "ci_low", "ci_high",
    "p_t", "p_t_holm", "p_wilcoxon", "verdict", "sentence", "left_out",
)
"""`comparison` is `control` (the positive control: reference the oracle, method the baseline)
or `align_vs` (reference ALIGN); `mean_difference` is reference minus method; `p_t_holm` is
empty for the control, which belongs to no family."""


def _verdict_key(c: Comparison) -> str:
    if c.kind == "align_vs":
        return c.outcome
    if not c.configured:
        return "not_configured"
    return "holds" if c.holds else "fails"


def to_csv(found: list[Comparison], provenance: dict[str, Any]) -> str:
    """verdict.csv: the positive control and one row per (metric, method); empty numbers where
    there are none."""
    rows = []
    for c in found:
        low, high = c.interval or (None, None)
        rows.append([
            c.kind, c.metric.key, c.metric.higher_is_better, c.reference, c.other,
            display_name(c.other), c.n, c.configured, csv_number(_mean(c.reference_values)),
            csv_number(_mean(c.other_values)), csv_number(c.mean_difference), csv_number(low),
            csv_number(high),
            csv_number(c.p_t), csv_number(c.p_t_holm if c.kind == "align_vs" else None),
            csv_number(c.p_wilcoxon), _verdict_key(c), c.sentence(), "; ".join(c.left_out),
        ])
    return csv_text(CSV_COLUMNS, rows, provenance)


def _points(value: float | None) -> float | None:
    """Accuracy points to 2 decimals: the headline is read, the CSVs keep every digit."""
    return None if value is None else round(value, 2)


def _p(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")


def _present(numbers: dict[str, float | int | None]) -> dict[str, float | int]:
    return {key: value for key, value in numbers.items() if value is not None}


def headline(evaluations: Evaluations, found: list[Comparison]) -> dict[str, Any]:
    """The few figures `dvc metrics show/diff` and `dvc exp show` compare across variants, keyed
    by method id (as `grid.methods`): `ood_accuracy` and `id_accuracy` ({method: mean over every
    configured cell with a value, %}), `align_vs` ({method: {ood_diff, ci_low, ci_high,
    p_t_holm}}: ALIGN minus the method in OOD accuracy over trained models) and
    `positive_control` ({ood_gain, ci_low, ci_high, p_value, n_units, holds (1 or 0)}: the
    oracle m-GT minus ERM). Numbers that do not exist (too few units) are left out rather than
    written as null; every other number is in `verdict.csv` and the tables' CSVs."""
    means: dict[str, dict[str, float]] = {"ood_accuracy": {}, "id_accuracy": {}}
    for key, in_distribution in (("ood_accuracy", False), ("id_accuracy", True)):
        for method in evaluations.methods:
            values = [
                value
                for address, record in evaluations.records.items()
                if address.method == method and isinstance(record, dict)
                and (address.train_domain == address.target_domain) == in_distribution
                and not isinstance(value := metric_value(record, ("accuracy",)), str)
            ]
            if values:
                means[key][method] = round(statistics.fmean(values), 2)
    align_vs: dict[str, dict[str, float | int]] = {}
    for c in found:
        if c.kind != "align_vs" or c.metric.key != "ood_accuracy" or not c.n:
            continue
        low, high = c.interval or (None, None)
        align_vs[c.other] = _present({
            "ood_diff": _points(c.mean_difference), "ci_low": _points(low),
            "ci_high": _points(high), "p_t_holm": _p(c.p_t_holm),
        })
    result: dict[str, Any] = {**means, "align_vs": align_vs}
    control = _control(found)
    if control is not None:
        low, high = control.interval or (None, None)
        result["positive_control"] = _present({
            "ood_gain": _points(control.mean_difference), "ci_low": _points(low),
            "ci_high": _points(high), "p_value": _p(control.p_t), "n_units": control.n,
            "holds": int(control.holds),
        })
    return result
