"""Intervals, paired tests and Holm's adjustment of the report, against scipy and hand
computations on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from align.report.collect import Summary
from align.report.statistics import (
    bootstrap_interval,
    holm_adjust,
    min_pairs,
    paired_differences,
    paired_t_p,
    t_half_width,
    wilcoxon_p,
)

SEED_VALUES = [(85.0, 87.0), (70.5, 72.25, 69.0), (1.0, 4.0, 2.0, 8.0, 5.0)]


@pytest.mark.parametrize("values", SEED_VALUES)
def test_t_interval_matches_scipy(values):
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                 scale=stats.sem(values))
    assert t_half_width(values) == pytest.approx((high - low) / 2, rel=1e-12)
    summary = Summary(values, len(values))
    assert summary.mean - summary.half_width == pytest.approx(low, rel=1e-12)


def test_equal_seeds_give_a_zero_width_interval():
    assert t_half_width([10.0, 10.0, 10.0]) == 0.0


def test_a_cell_is_mean_and_95_percent_interval_half_width_with_its_number_of_seeds():
    values = (85.0, 87.0)
    _, high = stats.t.interval(0.95, 1, loc=86.0, scale=stats.sem(values))
    assert Summary(values, 2).text() == f"86.00 ± {high - 86.0:.2f} (n=2)"
    assert Summary(values, 3, ((2, "why"),)).text() == f"86.00 ± {high - 86.0:.2f} (n=2 of 3)"


def test_a_single_seed_says_it_has_no_interval():
    assert Summary((85.0,), 1).text() == "85.00 (n=1, no interval)"
    assert Summary((85.0,), 2, ((1, "why"),)).text() == "85.00 (n=1 of 2, no interval)"
    assert Summary((85.0,), 1).half_width is None
    assert Summary((), 2, ((0, "why"), (1, "why"))).text() == "why"
    assert Summary((), 2, ((0, "a"), (1, "b"))).text() == "seed 0: a; seed 1: b"


@pytest.mark.parametrize(
    "differences",
    [
        [1.5, -0.5, 2.0, 3.0, 0.25, 4.0, -1.0, 2.5],  # distinct, exact distribution
        [1.0, 1.0, -1.0, 2.0, 0.0, 3.0, 2.0, 0.0, 1.0],  # ties and zeros: permutations
        list(np.linspace(-3, 9, 30)),  # above 13 pairs with a zero: normal approximation
    ],
)
def test_wilcoxon_p_equals_scipys_with_pratts_zero_handling(differences):
    expected = stats.wilcoxon(differences, zero_method="pratt").pvalue
    assert wilcoxon_p(differences) == pytest.approx(expected, rel=1e-12)


def test_wilcoxon_of_all_ties_is_one_and_of_one_pair_is_none():
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0
    assert wilcoxon_p([2.0]) is None


def test_paired_differences_round_away_float_noise():
    differences = paired_differences([0.3, 80.1], [0.1 + 0.2, 80.0])
    assert differences[0] == 0.0 and differences[1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unpaired"):
        paired_differences([1.0], [1.0, 2.0])


def test_bootstrap_interval_is_deterministic_contains_the_mean_and_matches_scipy():
    differences = np.array([0.5, -1.0, 2.0, 1.5, -0.5, 3.0, 0.0, 1.0, -2.0, 2.5])
    interval = bootstrap_interval(differences)
    assert interval == bootstrap_interval(differences)  # fixed seed: the same every time
    low, high = interval
    assert low < differences.mean() < high
    assert low < 0 < high  # a spread-out difference: 0 stays inside
    reference = stats.bootstrap((differences,), np.mean, confidence_level=0.95,
                                n_resamples=10_000, method="percentile",
                                rng=np.random.default_rng(1)).confidence_interval
    # Two Monte Carlo estimates of the same percentiles: equal within resampling noise.
    assert low == pytest.approx(reference.low, abs=0.1)
    assert high == pytest.approx(reference.high, abs=0.1)


def test_bootstrap_interval_of_two_pairs_by_hand():
    # Differences 0 and 2: a resampled mean is 0, 1 or 2 with chances 1/4, 1/2, 1/4, so the
    # 2.5th and 97.5th percentiles of 10,000 of them are 0 and 2; equal differences give a
    # zero-width interval at their value.
    assert bootstrap_interval([0.0, 2.0]) == (0.0, 2.0)
    assert bootstrap_interval([-10.0, -10.0, -10.0]) == (-10.0, -10.0)


def test_bootstrap_of_the_differences_is_scipys_paired_bootstrap_of_the_pairs():
    first = np.array([71.0, 65.5, 80.0, 58.25, 77.0])
    second = np.array([70.0, 60.0, 79.5, 50.0, 78.0])
    paired = stats.bootstrap((first, second), lambda a, b, axis: np.mean(a - b, axis=axis),
                             paired=True, n_resamples=10_000, method="percentile",
                             rng=np.random.default_rng(0)).confidence_interval
    low, high = bootstrap_interval(paired_differences(first, second))
    assert (low, high) == pytest.approx((paired.low, paired.high), rel=1e-12)


def test_bootstrap_interval_excludes_zero_for_a_clearly_shifted_difference():
    differences = np.array([4.0, 5.5, 6.0, 4.5, 5.0, 7.0, 3.5, 6.5])
    low, high = bootstrap_interval(differences)
    assert 0 < low < differences.mean() < high
    assert bootstrap_interval([1.0]) is None


def test_six_pairs_are_the_fewest_that_can_reach_p_below_005():
    assert min_pairs(0.05) == 6
    assert stats.wilcoxon([1.0] * 5).pvalue >= 0.05 > stats.wilcoxon([1.0] * 6).pvalue


# --- the paired t-test -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([71.0, 65.5, 80.0, 58.25, 77.0, 69.0], [70.0, 60.0, 79.5, 50.0, 78.0, 61.0]),
        ([10.0, 12.0, 9.0], [11.0, 10.5, 7.0]),
        ([1.0, 2.0], [0.5, 0.0]),
    ],
)
def test_paired_t_p_equals_scipys_ttest_rel(first, second):
    expected = stats.ttest_rel(first, second).pvalue
    assert paired_t_p(paired_differences(first, second)) == pytest.approx(expected, rel=1e-12)


def test_paired_t_p_by_hand():
    # Differences 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), t = 2.5 / (s / 2) = 3.873 on 3 df.
    t = 2.5 / (math.sqrt(5 / 3) / 2)
    assert t == pytest.approx(3.8729833, rel=1e-7)
    assert paired_t_p([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 * stats.t.sf(t, 3), rel=1e-12)
    assert paired_t_p([1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.030466, abs=1e-6)


def test_paired_t_p_without_spread_or_pairs():
    assert paired_t_p([0.0, 0.0, 0.0]) == 1.0  # no difference at all
    assert paired_t_p([-10.0, -10.0, -10.0]) == 0.0  # t is infinite: its limit
    assert paired_t_p([3.0]) is None


# --- Holm ---------------------------------------------------------------------------------------


def test_holm_by_hand():
    # Sorted: 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; the last is
    # raised to 0.06 so the adjusted values keep the raw values' order.
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.6, 0.7, 0.8]) == [1.0, 1.0, 1.0]  # capped at 1
    assert holm_adjust([0.01, 0.01]) == pytest.approx([0.02, 0.02])  # ties
    assert holm_adjust([0.03]) == [0.03]  # a family of one is unadjusted
    assert holm_adjust([]) == []


def test_holm_skips_missing_p_values():
    # None is no test: it keeps its place and the family has m = 2.
    assert holm_adjust([None, 0.02, None, 0.5]) == pytest.approx([None, 0.04, None, 0.5])
    assert holm_adjust([None, None]) == [None, None]
    with pytest.raises(ValueError, match="not a p-value"):
        holm_adjust([0.5, 1.5])


def test_holm_is_monotone_and_never_below_the_raw_p_value():
    p = np.random.default_rng(3).uniform(0, 0.2, 12)
    adjusted = np.array(holm_adjust(list(p)))
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)
    # Step-down: the smallest p times m, and none above Bonferroni's m * p.
    assert adjusted[order[0]] == pytest.approx(12 * p[order[0]])
    assert np.all(adjusted <= np.minimum(1, 12 * p) + 1e-15)


def test_holm_matches_statsmodels():
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.0001]
    expected = multipletests(p, method="holm")[1]
    assert holm_adjust(p) == pytest.approx(list(expected), rel=1e-12)
