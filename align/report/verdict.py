"""The verdict: does the benchmark's positive control hold, and is ALIGN really better or worse
than each other configured method? (Written out by `align.report.verdict_files`.)

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

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

from align.experiment import display_name
from align.report.collect import Address, Evaluations, MetricPath, metric_value
from align.report.statistics import (
    ALPHA,
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


# --- numbers in sentences ----------------------------------------------------------------------


def number_text(value: float | None, digits: int = DIGITS, sign: bool = False) -> str:
    """`value` to `digits` decimals (with its sign when `sign`), `n/a` for None."""
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def p_text(p: float | None) -> str:
    """A p-value: 4 decimals, scientific below 1e-4, `0` and `n/a` as such."""
    if p is None:
        return "n/a"
    if p == 0:
        return "0"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


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
            f"{number_text(self.mean_difference, sign=True)} points on average over {self.n}"
            f" trained models (95% CI [{number_text(low, sign=True)},"
            f" {number_text(high, sign=True)}], paired t-test p = {p_text(self.p_t)})"
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
