"""`results/verdict.{md,csv}`: is ALIGN really better or worse than each other configured method?

For each metric (out-of-distribution accuracy, in-distribution accuracy, sufficiency,
comprehensiveness) and each other method (every other method of `grid.methods`, and Table 2's
rows whose runs are configured, e.g. w/o EG read from the runs of a configured method that is
the same experiment), ALIGN and the method are paired on every configured (train domain, test
domain, seed) (in-distribution: (train domain, seed)).
A pair is left out only when one side has no number, and the file says how many and why.
The difference is ALIGN minus the other method; its 95% interval is a percentile bootstrap over
the pairs and its p-value a two-sided Wilcoxon signed-rank test (`align.report.statistics`).

The rule, at ALPHA = 0.05: ALIGN is called better (or worse) only when the interval excludes 0
and p < ALPHA, in the direction the metric calls better (lower sufficiency is better); otherwise
"no detectable difference". Below `min_pairs()` pairs (6) the signed-rank test cannot reach
p < 0.05 at all, and the verdict says there are too few pairs instead.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from align.report.collect import Address, Evaluations, MetricPath, display_name, metric_value
from align.report.statistics import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    bootstrap_interval,
    min_pairs,
    paired_differences,
    wilcoxon_p,
)

REFERENCE = "align"
DIGITS = 2

Outcome = Literal["better", "worse", "no_difference", "too_few_pairs", "no_pairs"]


@dataclass(frozen=True)
class VerdictMetric:
    key: str
    """The id in verdict.csv and metrics.json, e.g. `ood_accuracy`."""
    name: str
    """In sentences, e.g. `out-of-distribution accuracy`."""
    path: MetricPath
    in_distribution: bool
    higher_is_better: bool = True

    @property
    def pairing(self) -> str:
        return "train domain x seed" if self.in_distribution else (
            "train domain x test domain x seed"
        )

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


VERDICT_METRICS = (
    VerdictMetric("ood_accuracy", "out-of-distribution accuracy (%)", ("accuracy",), False),
    VerdictMetric("id_accuracy", "in-distribution accuracy (%)", ("accuracy",), True),
    VerdictMetric("sufficiency", "sufficiency (Suff, AOPC points)", ("sufficiency",), True,
                  higher_is_better=False),
    VerdictMetric("comprehensiveness", "comprehensiveness (Comp, AOPC points)",
                  ("comprehensiveness",), True),
)


def decide(
    n: int, interval: tuple[float, float] | None, p: float | None, higher_is_better: bool
) -> Outcome:
    """The verdict on n paired differences (ALIGN minus other): better or worse only when the
    interval excludes 0 and p < ALPHA, the interval's side of 0 giving the direction."""
    if n == 0:
        return "no_pairs"
    if n < min_pairs(ALPHA) or interval is None or p is None:
        return "too_few_pairs"
    low, high = interval
    if p >= ALPHA or low <= 0 <= high:
        return "no_difference"
    return "better" if (low > 0) == higher_is_better else "worse"


@dataclass(frozen=True)
class Comparison:
    """ALIGN against one method on one metric, over the configured pairs."""

    metric: VerdictMetric
    other: str
    configured: int
    """Pairs the grid configures."""
    align_values: tuple[float, ...]
    other_values: tuple[float, ...]
    """The complete pairs, ALIGN's and the other method's value pair by pair."""
    left_out: tuple[str, ...] = ()
    """Why incomplete pairs were left out, each reason once."""

    @property
    def n(self) -> int:
        return len(self.align_values)

    # Computed once: the bootstrap is the costly part, and every rendering reads it.
    @cached_property
    def differences(self) -> list[float]:
        return list(paired_differences(self.align_values, self.other_values))

    @property
    def mean_difference(self) -> float | None:
        return statistics.fmean(self.differences) if self.n else None

    @cached_property
    def interval(self) -> tuple[float, float] | None:
        return bootstrap_interval(self.differences)

    @cached_property
    def p_value(self) -> float | None:
        return wilcoxon_p(self.differences)

    @property
    def outcome(self) -> Outcome:
        return decide(self.n, self.interval, self.p_value, self.metric.higher_is_better)

    def sentence(self) -> str:
        """One plain sentence: the verdict, in the metric's better direction."""
        other = display_name(self.other)
        outcome = self.outcome
        if outcome == "better":
            return f"ALIGN is better than {other} ({self.metric.direction})."
        if outcome == "worse":
            return f"ALIGN is worse than {other} ({self.metric.direction})."
        if outcome == "no_difference":
            return f"No detectable difference between ALIGN and {other}."
        if outcome == "too_few_pairs":
            return (
                f"Too few pairs ({self.n}) to detect a difference between ALIGN and {other}:"
                f" the test needs at least {min_pairs(ALPHA)}."
            )
        why = "; ".join(self.left_out) or "the grid configures no such pair"
        return f"No pair to compare ALIGN and {other}: {why}."


def configured_pairs(evaluations: Evaluations, metric: VerdictMetric) -> list[tuple[str, str, int]]:
    """Every (train domain, test domain, seed) the grid configures for the metric."""
    return [
        (train, test, seed)
        for train in evaluations.train_domains
        for test in evaluations.target_domains
        if (test == train) == metric.in_distribution
        for seed in evaluations.seeds
    ]


def compare(evaluations: Evaluations, other: str, metric: VerdictMetric) -> Comparison:
    """ALIGN and `other` paired on every configured pair of `metric`."""
    pairs = configured_pairs(evaluations, metric)
    align_values, other_values, left_out = [], [], []
    for train, test, seed in pairs:
        values = {}
        for method in (REFERENCE, other):
            found = evaluations.record(Address(method, train, seed, test))
            values[method] = found if isinstance(found, str) else metric_value(found, metric.path)
        reasons = [f"{display_name(m)}: {v}" for m, v in values.items() if isinstance(v, str)]
        if reasons:
            left_out += reasons
            continue
        align_values.append(values[REFERENCE])
        other_values.append(values[other])
    return Comparison(metric, other, len(pairs), tuple(align_values), tuple(other_values),
                      tuple(dict.fromkeys(left_out)))


def compared_methods(evaluations: Evaluations) -> list[str]:
    """The methods ALIGN is compared with: every other configured method and every Table 2 row
    whose runs are configured (ALIGN first needs runs of its own)."""
    if REFERENCE not in evaluations.sources:
        return []
    return [m for m in evaluations.methods if m != REFERENCE and m in evaluations.sources]


def comparisons(evaluations: Evaluations) -> list[Comparison]:
    """Every comparison, metric by metric in `VERDICT_METRICS` order, methods in grid order."""
    methods = compared_methods(evaluations)
    return [compare(evaluations, m, metric) for metric in VERDICT_METRICS for m in methods]


# --- renderings --------------------------------------------------------------------------------


def _number(value: float | None, digits: int = DIGITS, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _mean(values: tuple[float, ...]) -> float | None:
    return statistics.fmean(values) if values else None


def method_text() -> str:
    """How the numbers were computed and the rule, for the top of verdict.md."""
    level = round(100 * CONFIDENCE)
    return (
        f"Each row pairs ALIGN with one method on the same configured (train domain, test"
        f" domain, seed) — (train domain, seed) for in-distribution metrics — and every"
        f" configured pair counts: a pair is left out only when one of the two has no number,"
        f" and the table says how many are left and why. Difference: ALIGN minus the other"
        f" method, in the metric's points. {level}% CI: percentile bootstrap over the pairs"
        f" ({BOOTSTRAP_RESAMPLES:,} resamples of the pairs with replacement, generator seed"
        f" {BOOTSTRAP_SEED}). p: two-sided Wilcoxon signed-rank test on the differences"
        f" (scipy.stats.wilcoxon; zero differences, i.e. ties, are kept in the ranking and their"
        f" ranks dropped (Pratt); every difference zero gives p = 1).\n\n"
        f"Rule, alpha = {ALPHA:.2f}: \"ALIGN is better than X\" (or worse) only when the {level}%"
        f" CI excludes 0 and p < {ALPHA:.2f}, the side of 0 deciding which, in the direction the"
        f" metric calls better (lower sufficiency is better); otherwise \"no detectable"
        f" difference\". With fewer than {min_pairs(ALPHA)} pairs the signed-rank test cannot"
        f" reach p < {ALPHA:.2f} at all, so the verdict says the pairs are too few.\n\n"
        f"Caveat: pairs that share a trained model (one run tested on several domains) or a"
        f" test set are not independent; the seeds are the independent replicates, so read"
        f" the p-values as indicative and add seeds (grid.seeds) to firm them up."
    )


def to_markdown(
    evaluations: Evaluations, found: list[Comparison], provenance: dict[str, Any]
) -> str:
    """verdict.md: the method and rule, then a table per metric with one sentence per method."""
    lines = [f"# Verdict: ALIGN against each configured method on {evaluations.dataset}", ""]
    if REFERENCE not in evaluations.sources:
        why = evaluations.notes.get(REFERENCE, "align not in grid.methods")
        lines += [f"Nothing to compare: {why} (add align to grid.methods).", ""]
    else:
        lines += [method_text(), ""]
    level = round(100 * CONFIDENCE)
    for metric in VERDICT_METRICS:
        rows = [c for c in found if c.metric == metric]
        if not rows:
            continue
        lines += [
            f"## {metric.name[0].upper()}{metric.name[1:]}: {metric.direction}; pairs ="
            f" {metric.pairing}",
            "",
            f"| ALIGN vs | pairs | ALIGN mean | other mean | ALIGN − other | {level}% CI | p"
            " | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        notes = []
        for c in rows:
            interval = "n/a" if c.interval is None else (
                f"[{_number(c.interval[0], sign=True)}, {_number(c.interval[1], sign=True)}]"
            )
            pairs = f"{c.n}" if c.n == c.configured else f"{c.n} of {c.configured}"
            lines.append(
                f"| {display_name(c.other)} | {pairs} | {_number(_mean(c.align_values))}"
                f" | {_number(_mean(c.other_values))} | {_number(c.mean_difference, sign=True)}"
                f" | {interval} | {_p_text(c.p_value)} | {c.sentence()} |"
            )
            if c.left_out and c.n:
                notes.append(f"{display_name(c.other)}: {c.configured - c.n} of {c.configured}"
                             f" pairs left out ({'; '.join(c.left_out)})")
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
    if not_compared:
        lines.append(f"Not compared (no configured runs): {', '.join(not_compared)}.")
    lines += [
        "",
        f"Made by `align report` from git commit `{provenance['git_commit']}` and params.yaml"
        f" hash `{provenance['params_hash']}`.",
    ]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


CSV_COLUMNS = (
    "metric", "higher_is_better", "method", "display_name", "n_pairs", "configured_pairs",
    "align_mean", "other_mean", "mean_difference", "ci_low", "ci_high", "p_value", "verdict",
    "sentence", "left_out", "git_commit", "params_hash",
)


def to_csv(found: list[Comparison], provenance: dict[str, Any]) -> str:
    """verdict.csv: one row per (metric, method); empty numbers where there are none."""
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.6g}"

    for c in found:
        low, high = c.interval or (None, None)
        writer.writerow([
            c.metric.key, c.metric.higher_is_better, c.other, display_name(c.other), c.n,
            c.configured, number(_mean(c.align_values)), number(_mean(c.other_values)),
            number(c.mean_difference), number(low), number(high), number(c.p_value), c.outcome,
            c.sentence(), "; ".join(c.left_out), provenance["git_commit"],
            provenance["params_hash"],
        ])
    return output.getvalue()


def headline(evaluations: Evaluations, found: list[Comparison]) -> dict[str, Any]:
    """The figures `dvc metrics show/diff` and `dvc exp show` compare across variants:
    `ood_accuracy` and `id_accuracy` ({method: mean over every configured cell with a value}) and
    `align_vs` ({method: {ood_accuracy_diff, ci_low, ci_high, p_value, n_pairs}}). Numbers that
    do not exist (too few pairs) are left out rather than written as null."""
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
                means[key][method] = round(statistics.fmean(values), 4)
    align_vs: dict[str, dict[str, float | int]] = {}
    for c in found:
        if c.metric.key != "ood_accuracy" or not c.n:
            continue
        low, high = c.interval or (None, None)
        numbers = {"ood_accuracy_diff": c.mean_difference, "ci_low": low, "ci_high": high,
                   "p_value": c.p_value}
        align_vs[c.other] = {
            **{k: float(f"{v:.6g}") for k, v in numbers.items() if v is not None},
            "n_pairs": c.n,
        }
    return {**means, "align_vs": align_vs}
