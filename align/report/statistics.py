"""Intervals and paired tests for the report: a t interval over seeds, and for paired comparisons
a paired t-test, a Wilcoxon signed-rank p-value, a percentile bootstrap interval and Holm's
adjustment of a family of p-values.

- Seeds: mean ± t_{0.975, n-1} * s / sqrt(n) (Student t, s the sample standard deviation); no
  interval from a single seed, rather than a zero-width one.
- Paired differences: scipy's percentile bootstrap of their mean (`scipy.stats.bootstrap`): the
  pairs are resampled with replacement (`BOOTSTRAP_RESAMPLES` times, a generator with a fixed
  seed, so the report is reproducible) and the interval is the 2.5th and 97.5th percentiles of
  the resampled mean differences. The primary p-value is the two-sided paired t-test (scipy's
  `ttest_rel`, i.e. a one-sample t-test of the differences against 0). Beside it, scipy's
  two-sided Wilcoxon signed-rank test with Pratt's treatment of zero differences (a tie between
  the two methods stays in the ranking, so ties make a difference harder, not easier, to
  detect); scipy uses the exact distribution, or every sign permutation where ties or zeros make
  it inexact, up to 13 pairs and the normal approximation above. When every difference is zero
  the test has nothing to rank and p is 1.
- A family of tests: Holm's step-down adjustment (Holm 1979) keeps the chance of any false
  rejection in the family at most alpha, whatever the dependence between the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = round(1 - CONFIDENCE, 12)  # 1 - 0.95 is 0.05000000000000004 in binary floating point
"""Significance level of the paired tests; a difference is called real only when the interval
excludes 0 and p < ALPHA."""
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
ROUNDING = 9
"""Decimals differences are rounded to, so that float noise does not split a tie (scipy's advice
for wilcoxon): metrics are percentages with far fewer significant digits."""


def t_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """Half-width of the Student t interval of the mean of `values` (t_{(1+c)/2, n-1} * s /
    sqrt(n)); None with fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    s = float(np.std(values, ddof=1))
    return float(stats.t.ppf((1 + confidence) / 2, n - 1)) * s / math.sqrt(n)


def paired_differences(first: Sequence[float], second: Sequence[float]) -> np.ndarray:
    """(n,) first - second, pair by pair, rounded to `ROUNDING` decimals."""
    if len(first) != len(second):
        raise ValueError(f"unpaired samples: {len(first)} and {len(second)} values")
    return np.round(np.asarray(first, float) - np.asarray(second, float), ROUNDING)


def bootstrap_interval(
    differences: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of paired differences (n,): pairs resampled
    with replacement `resamples` times from a generator seeded with `seed`; None for fewer than
    two pairs (resampling one value says nothing about its spread).

    Resampling the differences is the paired bootstrap: it gives what `scipy.stats.bootstrap`
    gives with `paired=True` on the two samples and the mean difference as the statistic."""
    values = np.asarray(differences, float)
    if len(values) < 2:
        return None
    found = stats.bootstrap(
        (values,), np.mean, confidence_level=confidence, n_resamples=resamples,
        method="percentile", rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(found.low), float(found.high)


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (n,), zero differences kept
    in the ranking (Pratt); 1 when every difference is zero; None for fewer than two pairs."""
    values = np.asarray(differences, float)
    if len(values) < 2:
        return None
    if not values.any():
        return 1.0
    return float(stats.wilcoxon(values, zero_method="pratt", alternative="two-sided").pvalue)


def min_pairs(alpha: float = ALPHA) -> int:
    """The fewest pairs with which the two-sided signed-rank test can reach p < alpha: with n
    pairs all of one sign its smallest p-value is 2 / 2**n (6 pairs at alpha = 0.05)."""
    n = 1
    while 2 / 2**n >= alpha:
        n += 1
    return n


def paired_t_p(differences: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value of paired differences (n,) against a mean of 0 (what
    `scipy.stats.ttest_rel(first, second)` computes from the pairs); None for fewer than two
    pairs. Equal differences have no spread, and the t statistic is 0/0 or infinite: p is then 1
    when every difference is zero and 0 otherwise (the limit), rather than scipy's NaN."""
    values = np.asarray(differences, float)
    if len(values) < 2:
        return None
    if not np.ptp(values):
        return 0.0 if values.any() else 1.0
    return float(stats.ttest_1samp(values, 0.0, alternative="two-sided").pvalue)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of m p-values (the entries that are not None):
    with p_(1) <= ... <= p_(m) sorted, adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)),
    so the adjusted values keep the order of the raw ones and rejecting those below alpha keeps
    the family-wise error rate at most alpha. Returns the adjusted values in input order; None
    (no test) stays None and does not count in m."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    for p, _ in present:
        if not 0 <= p <= 1:
            raise ValueError(f"not a p-value: {p}")
    adjusted: list[float | None] = [None] * len(p_values)
    m = len(present)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
