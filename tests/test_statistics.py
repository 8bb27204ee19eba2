"""Intervals and paired tests of the report, against scipy on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from align.report.collect import Summary
from align.report.statistics import (
    bootstrap_interval,
    min_pairs,
    paired_differences,
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


def test_bootstrap_interval_excludes_zero_for_a_clearly_shifted_difference():
    differences = np.array([4.0, 5.5, 6.0, 4.5, 5.0, 7.0, 3.5, 6.5])
    low, high = bootstrap_interval(differences)
    assert 0 < low < differences.mean() < high
    assert bootstrap_interval([1.0]) is None


def test_six_pairs_are_the_fewest_that_can_reach_p_below_005():
    assert min_pairs(0.05) == 6
    assert stats.wilcoxon([1.0] * 5).pvalue >= 0.05 > stats.wilcoxon([1.0] * 6).pvalue
