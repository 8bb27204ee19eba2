"""results/verdict.{md,csv}: paired comparisons of ALIGN with every other configured method, the
verdict rule, and the headline numbers of metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import with_sections
from scipy import stats
from test_report import STAMP, grid_params, read_csv, write_evals

from align.report.collect import collect_evaluations
from align.report.statistics import bootstrap_interval
from align.report.verdict import (
    VERDICT_METRICS,
    Comparison,
    comparisons,
    decide,
    headline,
    to_csv,
    to_markdown,
)

METRICS = {metric.key: metric for metric in VERDICT_METRICS}
NOISE = (0.3, -0.2, 0.5, -0.4, 0.1, 0.0, -0.1, 0.2)


def comparison(metric: str, differences: list[float], other: str = "erm") -> Comparison:
    """ALIGN's values are the other method's (70, 71, ...) plus `differences`."""
    others = tuple(70.0 + i for i in range(len(differences)))
    aligns = tuple(o + d for o, d in zip(others, differences, strict=True))
    return Comparison(METRICS[metric], other, len(differences), aligns, others)


def test_a_clear_gain_in_accuracy_is_better():
    found = comparison("ood_accuracy", [5 + e for e in NOISE])
    assert found.outcome == "better"
    assert found.sentence() == "ALIGN is better than ERM (higher is better)."
    low, high = found.interval
    assert 0 < low < found.mean_difference < high
    assert found.p_value == pytest.approx(stats.wilcoxon(found.differences,
                                                         zero_method="pratt").pvalue)


def test_a_clear_loss_in_accuracy_is_worse():
    found = comparison("id_accuracy", [-5 + e for e in NOISE])
    assert found.outcome == "worse"
    assert found.sentence() == "ALIGN is worse than ERM (higher is better)."


def test_lower_sufficiency_is_better():
    assert comparison("sufficiency", [-5 + e for e in NOISE]).sentence() == (
        "ALIGN is better than ERM (lower is better)."
    )
    assert comparison("sufficiency", [5 + e for e in NOISE]).outcome == "worse"


def test_differences_around_zero_are_no_detectable_difference():
    found = comparison("comprehensiveness", [1.0, -1.0, 2.0, -2.5, 0.5, -0.5, 3.0, -2.0])
    assert found.outcome == "no_difference"
    assert found.sentence() == "No detectable difference between ALIGN and ERM."
    assert comparison("ood_accuracy", [0.0] * 8).outcome == "no_difference"  # all ties: p = 1


def test_fewer_than_six_pairs_are_too_few_whatever_the_numbers():
    found = comparison("ood_accuracy", [5.0, 6.0, 5.5, 7.0, 6.5])
    assert found.outcome == "too_few_pairs"
    assert found.sentence() == (
        "Too few pairs (5) to detect a difference between ALIGN and ERM: the test needs at least"
        " 6."
    )
    empty = Comparison(METRICS["ood_accuracy"], "erm", 4, (), (), ("ERM: not trained",))
    assert empty.sentence() == "No pair to compare ALIGN and ERM: ERM: not trained."


def test_the_interval_and_the_p_value_must_both_agree():
    assert decide(8, (1.0, 3.0), 0.01, higher_is_better=True) == "better"
    assert decide(8, (1.0, 3.0), 0.08, higher_is_better=True) == "no_difference"
    assert decide(8, (-0.5, 3.0), 0.01, higher_is_better=True) == "no_difference"
    assert decide(8, (-3.0, -1.0), 0.01, higher_is_better=False) == "better"


def test_the_interval_is_the_bootstrap_of_the_differences():
    found = comparison("ood_accuracy", [5 + e for e in NOISE])
    assert found.interval == bootstrap_interval(np.array(found.differences))


@pytest.fixture
def four_seeds(tmp_path: Path):
    """erm, align, dre and an unguided m_gray (which is w/o EG) x 2 domains x 4 seeds: ALIGN is
    10 points below ERM in accuracy, 10 points lower (better) in sufficiency and equal in
    comprehensiveness."""
    methods = ["erm", "align", "dre", "m_gray"]
    params = with_sections(grid_params(tmp_path, methods, [0, 1, 2, 3]),
                           methods={"m_gray": {"lambda3": 0.0}})
    write_evals(tmp_path / "runs", methods, [0, 1, 2, 3])
    return params, collect_evaluations(params, tmp_path / "runs")


def test_every_configured_pair_counts_and_each_method_gets_a_sentence(four_seeds):
    _, evaluations = four_seeds
    rows = read_csv(to_csv(comparisons(evaluations), STAMP))
    by = {(row["metric"], row["method"]): row for row in rows}
    # Every other configured method and w/o EG (m_gray's runs), against ALIGN on four metrics.
    assert {method for _, method in by} == {"erm", "dre", "m_gray", "wo_eg"}
    assert len(rows) == 4 * 4
    # OOD: 2 train domains x 1 other test domain x 4 seeds; in-distribution: 2 x 4.
    assert {row["n_pairs"] for row in rows if row["metric"] == "ood_accuracy"} == {"8"}
    assert {row["n_pairs"] for row in rows if row["metric"] != "ood_accuracy"} == {"8"}
    assert by[("ood_accuracy", "erm")]["verdict"] == "worse"
    assert float(by[("ood_accuracy", "erm")]["mean_difference"]) == pytest.approx(-10.0)
    assert by[("ood_accuracy", "dre")]["verdict"] == "better"  # DRE's base is 50, ALIGN's 70
    assert by[("sufficiency", "erm")]["sentence"] == "ALIGN is better than ERM (lower is better)."
    assert by[("comprehensiveness", "erm")]["verdict"] == "no_difference"
    assert by[("ood_accuracy", "wo_eg")]["mean_difference"] == (
        by[("ood_accuracy", "m_gray")]["mean_difference"]
    )
    assert {row["git_commit"] for row in rows} == {STAMP["git_commit"]}


def test_verdict_md_states_the_rule_the_pairs_and_the_provenance(four_seeds):
    _, evaluations = four_seeds
    markdown = to_markdown(evaluations, comparisons(evaluations), STAMP)
    assert "alpha = 0.05" in markdown and "10,000 resamples" in markdown
    assert "Pratt" in markdown and "fewer than 6 pairs" in markdown
    assert "pairs = train domain x test domain x seed" in markdown
    erm = next(line for line in markdown.splitlines() if line.startswith("| ERM | 8 |"))
    assert erm.endswith("| ALIGN is worse than ERM (higher is better). |")
    assert "w/o EG is the same experiment as m-Gray" in markdown
    assert "Not compared (no configured runs): m-SAM" in markdown
    assert STAMP["git_commit"] in markdown and STAMP["params_hash"] in markdown


def test_missing_pairs_are_counted_and_explained(four_seeds):
    params, evaluations = four_seeds
    (evaluations.run_dir("align", "noise", 3) / "eval" / "gradient.json").unlink()
    evaluations = collect_evaluations(params, evaluations.runs_root)
    found = next(c for c in comparisons(evaluations)
                 if (c.metric.key, c.other) == ("ood_accuracy", "erm"))
    assert (found.n, found.configured) == (7, 8)
    assert "not evaluated" in found.left_out[0]
    markdown = to_markdown(evaluations, comparisons(evaluations), STAMP)
    assert "| ERM | 7 of 8 |" in markdown and "ERM: 1 of 8 pairs left out (ALIGN: not" in (
        markdown
    )


def test_without_align_there_is_nothing_to_compare(tmp_path):
    params = grid_params(tmp_path, ["erm"], [0])
    write_evals(tmp_path / "runs", ["erm"], [0])
    evaluations = collect_evaluations(params, tmp_path / "runs")
    assert comparisons(evaluations) == []
    assert "Nothing to compare: align not in grid.methods" in to_markdown(evaluations, [], STAMP)


def test_headline_holds_mean_accuracies_and_alignss_paired_ood_differences(four_seeds):
    _, evaluations = four_seeds
    found = comparisons(evaluations)
    numbers = json.loads(json.dumps(headline(evaluations, found)))  # what metrics.json holds
    assert set(numbers) == {"ood_accuracy", "id_accuracy", "align_vs"}
    # ERM's OOD accuracy is 80 + 2 * seed on both train domains.
    assert numbers["ood_accuracy"]["erm"] == pytest.approx(np.mean([80 + 2 * s for s in range(4)]))
    assert numbers["id_accuracy"]["align"] == pytest.approx(np.mean([75 + 2 * s for s in range(4)]))
    erm = numbers["align_vs"]["erm"]
    assert set(erm) == {"ood_accuracy_diff", "ci_low", "ci_high", "p_value", "n_pairs"}
    assert erm["ood_accuracy_diff"] == pytest.approx(-10.0) and erm["n_pairs"] == 8
    assert erm["p_value"] == pytest.approx(stats.wilcoxon([-10.0] * 8).pvalue)
