"""`results/verdict.{md,csv}`: does the benchmark's positive control hold, and is ALIGN really
better or worse than each other configured method?

The unit of evidence is a trained model, one (train domain, seed) run of a method: the test
domains of one model share everything its seed decided, so they are one piece of evidence, not
several. For out-of-distribution accuracy a unit's value is the mean over its test domains (every
configured domain other than its training domain); a unit missing any of them is left out, and
the file says how many and why. In-distribution metrics (accuracy, sufficiency,
comprehensiveness) have one value per unit. ALIGN and each other method (every other method of
`grid.methods`, and Table 2's rows whose runs are configured, e.g. w/o EG read from the runs of a
configured method that is the same experiment) are paired on the units.

Per comparison (`align.report.statistics`): the difference is ALIGN minus the other method; its
95% interval a percentile bootstrap over the units; the primary p-value a two-sided paired t-test,
adjusted by Holm's method over the comparisons of one metric (one family per metric); a Wilcoxon
signed-rank p-value beside it where the units are enough for it to reach ALPHA.

The rule, at ALPHA = 0.05: ALIGN is called better (or worse) only when the Holm-adjusted t-test
p < ALPHA and the interval excludes 0, in the direction the metric calls better (lower
sufficiency is better); otherwise "no detectable difference". Below MIN_UNITS trained models
there is no verdict.

The positive control, declared before any result and outside every Holm family: the oracle of
`POSITIVE_CONTROL` (guided by the true object masks) must beat ERM out of distribution by at
least CONTROL_MIN_GAIN points on average over the units, with an (unadjusted, single) paired
t-test p < ALPHA and an interval above 0. When it fails the benchmark cannot tell a method that
uses the object from one that does not, and no row of the verdict is evidence.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal

from align.experiment import display_name
from align.report.collect import Address, Evaluations, MetricPath, metric_value
from align.report.statistics import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    bootstrap_interval,
    holm_adjust,
    min_pairs,
    paired_differences,
    paired_t_p,
    wilcoxon_p,
)

REFERENCE = "align"
POSITIVE_CONTROL = ("m_gt", "erm")
"""(oracle, baseline) of the positive control: the oracle must beat the baseline out of
distribution. The one place that names the oracle."""
CONTROL_MIN_GAIN = 10.0
"""The oracle's least mean out-of-distribution accuracy gain over the baseline (points) for the
control to hold."""
MIN_UNITS = 3
"""The fewest trained models a verdict needs: with 2 the t-test has a single degree of freedom
and the bootstrap only three possible resampled means."""
DIGITS = 2

Unit = tuple[str, int]
"""A trained model: (train domain, seed)."""
Outcome = Literal["better", "worse", "no_difference", "too_few_units", "no_units"]
Kind = Literal["align_vs", "control"]


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
    def unit_value(self) -> str:
        """What one trained model contributes, for headings."""
        if self.in_distribution:
            return "a trained model's value on its own domain"
        return "a trained model's mean over its test domains"

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


OOD_ACCURACY = VerdictMetric("ood_accuracy", "out-of-distribution accuracy (%)", ("accuracy",),
                             False)
VERDICT_METRICS = (
    OOD_ACCURACY,
    VerdictMetric("id_accuracy", "in-distribution accuracy (%)", ("accuracy",), True),
    VerdictMetric("sufficiency", "sufficiency (Suff, AOPC points)", ("sufficiency",), True,
                  higher_is_better=False),
    VerdictMetric("comprehensiveness", "comprehensiveness (Comp, AOPC points)",
                  ("comprehensiveness",), True),
)


# --- the rule ----------------------------------------------------------------------------------


def decide(
    n: int, interval: tuple[float, float] | None, p: float | None, higher_is_better: bool
) -> Outcome:
    """The verdict on n paired units (differences ALIGN minus other) from the rule's pieces: `p`
    the (Holm-adjusted) t-test p-value, `interval` the bootstrap interval of the mean difference.
    Better or worse only when p < ALPHA and the interval excludes 0, the interval's side of 0
    giving the direction; no verdict below MIN_UNITS units."""
    if n == 0:
        return "no_units"
    if n < MIN_UNITS or interval is None or p is None:
        return "too_few_units"
    low, high = interval
    if p >= ALPHA or low <= 0 <= high:
        return "no_difference"
    return "better" if (low > 0) == higher_is_better else "worse"


def control_holds(
    n: int, gain: float | None, interval: tuple[float, float] | None, p: float | None
) -> bool:
    """Whether the positive control holds on n units: the oracle's mean gain over the baseline
    is at least CONTROL_MIN_GAIN points, its unadjusted t-test p < ALPHA and its interval lies
    above 0, on at least MIN_UNITS units."""
    return (
        n >= MIN_UNITS and gain is not None and gain >= CONTROL_MIN_GAIN
        and p is not None and p < ALPHA and interval is not None and interval[0] > 0
    )


# --- units -------------------------------------------------------------------------------------


def measured_domains(
    evaluations: Evaluations, train_domain: str, metric: VerdictMetric
) -> list[str]:
    """The domains a model trained on `train_domain` is measured on for `metric`."""
    if metric.in_distribution:
        return [train_domain]
    return [domain for domain in evaluations.target_domains if domain != train_domain]


def configured_units(evaluations: Evaluations, metric: VerdictMetric) -> list[Unit]:
    """Every (train domain, seed) the grid configures that has a domain to measure `metric` on
    (a single-domain dataset has no out-of-distribution unit)."""
    return [
        (train, seed)
        for train in evaluations.train_domains
        if measured_domains(evaluations, train, metric)
        for seed in evaluations.seeds
    ]


def method_cells(
    evaluations: Evaluations, method: str, metric: VerdictMetric
) -> dict[Unit, dict[str, float | str]]:
    """{unit: {test domain: `method`'s value of `metric`, or why there is none}}."""
    cells: dict[Unit, dict[str, float | str]] = {}
    for train, seed in configured_units(evaluations, metric):
        by_domain = {}
        for test in measured_domains(evaluations, train, metric):
            found = evaluations.record(Address(method, train, seed, test))
            by_domain[test] = found if isinstance(found, str) else metric_value(found, metric.path)
        cells[(train, seed)] = by_domain
    return cells


def unit_values(cells: Mapping[Unit, Mapping[str, float | str]]) -> dict[Unit, float | str]:
    """Each unit's value: the mean over its test domains ({test domain: value or why missing}),
    or, when any of them has no value, why (each reason once): a model's mean over fewer
    domains would not be comparable with the others'."""
    values: dict[Unit, float | str] = {}
    for unit, by_domain in cells.items():
        reasons = [value for value in by_domain.values() if isinstance(value, str)]
        numbers = [value for value in by_domain.values() if not isinstance(value, str)]
        if reasons:
            values[unit] = "; ".join(dict.fromkeys(reasons))
        elif not numbers:
            values[unit] = "no test domain"
        else:
            values[unit] = statistics.fmean(numbers)
    return values


def pair_units(
    first: Mapping[Unit, float | str], second: Mapping[Unit, float | str], names: tuple[str, str]
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[str, ...]]:
    """The units of `first` that both sides have a value for, paired: (first's values (n,),
    second's values (n,), why the other units were left out: each reason once, after the
    display name of the method (`names`) that lacks the value)."""
    firsts, seconds, left_out = [], [], []
    for unit, value in first.items():
        other = second.get(unit, "not configured")
        reasons = [f"{display_name(name)}: {v}" for name, v in zip(names, (value, other),
                                                                   strict=True)
                   if isinstance(v, str)]
        if reasons:
            left_out += reasons
            continue
        firsts.append(float(value))
        seconds.append(float(other))
    return tuple(firsts), tuple(seconds), tuple(dict.fromkeys(left_out))


# --- comparisons -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """`reference` (ALIGN, or the control's oracle) against `other` on one metric, paired on
    trained models."""

    metric: VerdictMetric
    other: str
    configured: int
    """Units (trained models) the grid configures."""
    reference_values: tuple[float, ...]
    other_values: tuple[float, ...]
    """The complete units: the reference's and the other method's value, unit by unit."""
    left_out: tuple[str, ...] = ()
    """Why incomplete units were left out, each reason once."""
    reference: str = REFERENCE
    kind: Kind = "align_vs"
    holm_p: float | None = None
    """The t-test p adjusted over the metric's family (set by `comparisons`); None for a
    comparison made alone, a family of one, whose adjusted p is its own."""
    family_size: int = 1
    """The distinct tests in the Holm family."""

    @property
    def n(self) -> int:
        return len(self.reference_values)

    # Computed once: the bootstrap is the costly part, and every rendering reads it.
    @cached_property
    def differences(self) -> list[float]:
        return list(paired_differences(self.reference_values, self.other_values))

    @property
    def mean_difference(self) -> float | None:
        return statistics.fmean(self.differences) if self.n else None

    @cached_property
    def interval(self) -> tuple[float, float] | None:
        return bootstrap_interval(self.differences)

    @cached_property
    def p_t(self) -> float | None:
        """The paired t-test's p, unadjusted; None below two units."""
        return paired_t_p(self.differences)

    @property
    def p_t_holm(self) -> float | None:
        return self.p_t if self.holm_p is None else self.holm_p

    @cached_property
    def p_wilcoxon(self) -> float | None:
        """The signed-rank test's p where the units let it reach ALPHA, else None."""
        return wilcoxon_p(self.differences) if self.n >= min_pairs(ALPHA) else None

    @property
    def outcome(self) -> Outcome:
        return decide(self.n, self.interval, self.p_t_holm, self.metric.higher_is_better)

    @property
    def holds(self) -> bool:
        """For the positive control: whether it holds."""
        return control_holds(self.n, self.mean_difference, self.interval, self.p_t)

    def sentence(self) -> str:
        """One plain sentence: the verdict, or whether the positive control holds."""
        return self._control_sentence() if self.kind == "control" else self._verdict_sentence()

    def _verdict_sentence(self) -> str:
        other = display_name(self.other)
        outcome = self.outcome
        if outcome == "better":
            return f"ALIGN is better than {other} ({self.metric.direction})."
        if outcome == "worse":
            return f"ALIGN is worse than {other} ({self.metric.direction})."
        if outcome == "no_difference":
            return f"No detectable difference between ALIGN and {other}."
        if outcome == "too_few_units":
            return (
                f"Too few trained models ({self.n}) to detect a difference between ALIGN and"
                f" {other}: a verdict needs at least {MIN_UNITS}."
            )
        why = "; ".join(self.left_out) or "the grid configures no such trained model"
        return f"No trained model to compare ALIGN and {other}: {why}."

    def _control_sentence(self) -> str:
        oracle, baseline = display_name(self.reference), display_name(self.other)
        why = "; ".join(self.left_out)
        if not self.configured:
            return (
                f"There is no positive control ({why or 'no trained model configured'}; add"
                f" {self.reference} and {self.other} to grid.methods): nothing shows that this"
                f" benchmark can tell methods apart."
            )
        if self.n < MIN_UNITS:
            found = f" ({why})" if why else ""
            return (
                f"The positive control cannot be judged: {self.n} trained models have both"
                f" numbers{found}, where it needs at least {MIN_UNITS}; nothing shows that the"
                f" benchmark can tell methods apart; read no row below as evidence."
            )
        low, high = self.interval or (None, None)
        numbers = (
            f"{_number(self.mean_difference, sign=True)} points on average over {self.n} trained"
            f" models (95% CI [{_number(low, sign=True)}, {_number(high, sign=True)}], paired"
            f" t-test p = {_p_text(self.p_t)})"
        )
        if self.holds:
            return (
                f"The positive control holds: {oracle} beats {baseline} out of distribution by"
                f" {numbers}, at least the {CONTROL_MIN_GAIN:g} points required, so the benchmark"
                f" can tell a method that uses the object from one that does not."
            )
        failed = [
            text for text, bad in (
                (f"a gain under {CONTROL_MIN_GAIN:g} points",
                 (self.mean_difference or 0) < CONTROL_MIN_GAIN),
                (f"p >= {ALPHA:.2f}", self.p_t is None or self.p_t >= ALPHA),
                ("a CI not above 0", low is None or low <= 0),
            ) if bad
        ]
        return (
            f"The positive control FAILS: {oracle} − {baseline} is {numbers}: {', '.join(failed)};"
            f" the benchmark cannot tell methods apart; read no row below as evidence."
        )


def compare(
    evaluations: Evaluations,
    other: str,
    metric: VerdictMetric,
    reference: str = REFERENCE,
    kind: Kind = "align_vs",
) -> Comparison:
    """`reference` and `other` paired on every configured unit of `metric`."""
    units = unit_values(method_cells(evaluations, reference, metric))
    references, others, left_out = pair_units(
        units, unit_values(method_cells(evaluations, other, metric)), (reference, other)
    )
    return Comparison(metric, other, len(units), references, others, left_out, reference, kind)


def compared_methods(evaluations: Evaluations) -> list[str]:
    """The methods ALIGN is compared with: every other configured method and every Table 2 row
    whose runs are configured (ALIGN first needs runs of its own)."""
    if REFERENCE not in evaluations.sources:
        return []
    return [m for m in evaluations.methods if m != REFERENCE and m in evaluations.sources]


def positive_control(evaluations: Evaluations) -> Comparison:
    """The oracle against the baseline of `POSITIVE_CONTROL` on out-of-distribution accuracy;
    with no unit configured (and the reason) when either has no configured runs."""
    oracle, baseline = POSITIVE_CONTROL
    missing = [
        f"{display_name(method)}: {evaluations.notes.get(method, f'{method} not in grid.methods')}"
        for method in POSITIVE_CONTROL if method not in evaluations.sources
    ]
    if missing:
        return Comparison(OOD_ACCURACY, baseline, 0, (), (), tuple(missing), oracle, "control")
    return compare(evaluations, baseline, OOD_ACCURACY, oracle, "control")


def holm_family(family: Sequence[Comparison], sources: Sequence[str]) -> list[Comparison]:
    """The comparisons of one metric with their t-test p adjusted by Holm's method. A method
    that reads another's runs (w/o EG standing in for m-Gray) repeats that method's test, so each
    source counts once."""
    first: dict[str, float | None] = {}
    for comparison, source in zip(family, sources, strict=True):
        first.setdefault(source, comparison.p_t)
    adjusted = dict(zip(first, holm_adjust(list(first.values())), strict=True))
    size = sum(p is not None for p in first.values())
    return [replace(c, holm_p=adjusted[source], family_size=size)
            for c, source in zip(family, sources, strict=True)]


def comparisons(evaluations: Evaluations) -> list[Comparison]:
    """The positive control, then every ALIGN comparison, metric by metric in
    `VERDICT_METRICS` order, methods in grid order, Holm-adjusted within each metric."""
    methods = compared_methods(evaluations)
    sources = [evaluations.sources[m] for m in methods]
    found = [positive_control(evaluations)]
    for metric in VERDICT_METRICS:
        found += holm_family([compare(evaluations, m, metric) for m in methods], sources)
    return found


def _control(found: list[Comparison]) -> Comparison | None:
    return next((c for c in found if c.kind == "control"), None)


# --- renderings --------------------------------------------------------------------------------


def _number(value: float | None, digits: int = DIGITS, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p == 0:
        return "0"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _mean(values: tuple[float, ...]) -> float | None:
    return statistics.fmean(values) if values else None


def _interval_text(c: Comparison) -> str:
    if c.interval is None:
        return "n/a"
    return f"[{_number(c.interval[0], sign=True)}, {_number(c.interval[1], sign=True)}]"


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
        f" percentile bootstrap over the units ({BOOTSTRAP_RESAMPLES:,} resamples of the units"
        f" with replacement, generator seed {BOOTSTRAP_SEED}). p (t): two-sided paired t-test on"
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
            f"| trained models | {names[0]} mean | {names[1]} mean | {names[0]} − {names[1]}"
            f" | {level}% CI | p (t) | p (Wilcoxon) |",
            "|---|---|---|---|---|---|---|",
            f"| {_count(control)} | {_number(_mean(control.reference_values))}"
            f" | {_number(_mean(control.other_values))}"
            f" | {_number(control.mean_difference, sign=True)} | {_interval_text(control)}"
            f" | {_p_text(control.p_t)} | {_p_text(control.p_wilcoxon)} |",
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
            f"| ALIGN vs | trained models | ALIGN mean | other mean | ALIGN − other | {level}% CI"
            " | p (t) | p (Holm) | p (Wilcoxon) | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        notes = []
        for c in rows:
            lines.append(
                f"| {display_name(c.other)} | {_count(c)} | {_number(_mean(c.reference_values))}"
                f" | {_number(_mean(c.other_values))} | {_number(c.mean_difference, sign=True)}"
                f" | {_interval_text(c)} | {_p_text(c.p_t)} | {_p_text(c.p_t_holm)}"
                f" | {_p_text(c.p_wilcoxon)} | {c.sentence()} |"
            )
            if c.left_out and c.n:
                notes.append(f"{display_name(c.other)}: {c.configured - c.n} of {c.configured}"
                             f" trained models left out ({'; '.join(c.left_out)})")
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
    "p_t", "p_t_holm", "p_wilcoxon", "verdict", "sentence", "left_out", "git_commit",
    "params_hash",
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
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.6g}"

    for c in found:
        low, high = c.interval or (None, None)
        writer.writerow([
            c.kind, c.metric.key, c.metric.higher_is_better, c.reference, c.other,
            display_name(c.other), c.n, c.configured, number(_mean(c.reference_values)),
            number(_mean(c.other_values)), number(c.mean_difference), number(low), number(high),
            number(c.p_t), number(c.p_t_holm if c.kind == "align_vs" else None),
            number(c.p_wilcoxon), _verdict_key(c), c.sentence(), "; ".join(c.left_out),
            provenance["git_commit"], provenance["params_hash"],
        ])
    return output.getvalue()


def _rounded(numbers: dict[str, float | None]) -> dict[str, float]:
    return {k: float(f"{v:.6g}") for k, v in numbers.items() if v is not None}


def headline(evaluations: Evaluations, found: list[Comparison]) -> dict[str, Any]:
    """The figures `dvc metrics show/diff` and `dvc exp show` compare across variants:
    `ood_accuracy` and `id_accuracy` ({method: mean over every configured cell with a value}),
    `align_vs` ({method: {ood_accuracy_diff, ci_low, ci_high, p_t, p_t_holm, p_wilcoxon,
    n_units}}) and `positive_control` ({oracle, baseline, ood_gain, ci_low, ci_high, p_value,
    n_units, holds (1 or 0)}). Numbers that do not exist (too few units) are left out rather
    than written as null."""
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
        if c.kind != "align_vs" or c.metric.key != "ood_accuracy" or not c.n:
            continue
        low, high = c.interval or (None, None)
        align_vs[c.other] = {
            **_rounded({"ood_accuracy_diff": c.mean_difference, "ci_low": low, "ci_high": high,
                        "p_t": c.p_t, "p_t_holm": c.p_t_holm, "p_wilcoxon": c.p_wilcoxon}),
            "n_units": c.n,
        }
    result: dict[str, Any] = {**means, "align_vs": align_vs}
    control = _control(found)
    if control is not None:
        low, high = control.interval or (None, None)
        result["positive_control"] = {
            "oracle": control.reference,
            "baseline": control.other,
            **_rounded({"ood_gain": control.mean_difference, "ci_low": low, "ci_high": high,
                        "p_value": control.p_t}),
            "n_units": control.n,
            "holds": int(control.holds),
        }
    return result
