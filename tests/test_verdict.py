"""results/verdict.{md,csv}: the positive control, and ALIGN against every other configured method
over trained models (units), Holm-adjusted within a metric; the headline numbers of metrics.json;
and a null simulation showing that the unit-level rule keeps its error rate where pairing test
domains of one model did not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import markdown_rows, with_sections
from scipy import stats
from test_report import STAMP, eval_record, grid_params, read_csv, write_evals

from align.report.collect import collect_evaluations
from align.report.statistics import (
    ALPHA,
    bootstrap_interval,
    holm_adjust,
    paired_differences,
    paired_t_p,
    wilcoxon_p,
)
from align.report.verdict import (
    CONTROL_MIN_GAIN,
    MIN_UNITS,
    OOD_ACCURACY,
    POSITIVE_CONTROL,
    VERDICT_METRICS,
    Comparison,
    comparisons,
    control_holds,
    decide,
    holm_family,
    pair_units,
    unit_values,
)
from align.report.verdict_files import headline, to_csv, to_markdown
from align.runs import RunSpec

METRICS = {metric.key: metric for metric in VERDICT_METRICS}
NOISE = (0.3, -0.2, 0.5, -0.4, 0.1, 0.0, -0.1, 0.2)
ORACLE, BASELINE = POSITIVE_CONTROL


def comparison(metric: str, differences: list[float], other: str = "erm") -> Comparison:
    """ALIGN's values are the other method's (70, 71, ...) plus `differences`, one per unit."""
    others = tuple(70.0 + i for i in range(len(differences)))
    aligns = tuple(o + d for o, d in zip(others, differences, strict=True))
    return Comparison(METRICS[metric], other, len(differences), aligns, others)


def control(gains: list[float]) -> Comparison:
    """The positive control with the oracle `gains` points above the baseline, unit by unit."""
    baseline = tuple(40.0 + 3 * i for i in range(len(gains)))
    oracle = tuple(b + g for b, g in zip(baseline, gains, strict=True))
    return Comparison(OOD_ACCURACY, BASELINE, len(gains), oracle, baseline, (), ORACLE, "control")


# --- the rule on one comparison ----------------------------------------------------------------


def test_a_clear_gain_in_accuracy_is_better():
    found = comparison("ood_accuracy", [5 + e for e in NOISE])
    assert found.outcome == "better"
    assert found.sentence() == "ALIGN is better than ERM (higher is better)."
    low, high = found.interval
    assert 0 < low < found.mean_difference < high
    aligns, others = found.reference_values, found.other_values
    assert found.p_t == pytest.approx(stats.ttest_rel(aligns, others).pvalue, rel=1e-9)
    assert found.p_t_holm == found.p_t  # alone, a family of one
    assert found.p_wilcoxon == pytest.approx(stats.wilcoxon(found.differences,
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


def test_three_units_give_a_verdict_and_the_wilcoxon_waits_for_six():
    found = comparison("ood_accuracy", [5.0, 6.0, 5.5])
    assert found.outcome == "better"
    assert found.p_t == pytest.approx(stats.ttest_1samp([5.0, 6.0, 5.5], 0).pvalue)
    assert found.p_wilcoxon is None  # 3 units: the signed-rank test cannot reach 0.05
    assert comparison("ood_accuracy", [5 + e for e in NOISE[:6]]).p_wilcoxon is not None


def test_fewer_than_three_units_are_too_few_whatever_the_numbers():
    assert MIN_UNITS == 3
    found = comparison("ood_accuracy", [5.0, 6.0])
    assert found.p_t is not None  # the t-test runs on 2 units; the verdict does not
    assert found.outcome == "too_few_units"
    assert found.sentence() == (
        "Too few trained models (2) to detect a difference between ALIGN and ERM: a verdict"
        " needs at least 3."
    )
    assert comparison("ood_accuracy", [5.0]).p_t is None
    empty = Comparison(METRICS["ood_accuracy"], "erm", 4, (), (), ("ERM: not trained",))
    assert empty.outcome == "no_units"
    assert empty.sentence() == "No trained model to compare ALIGN and ERM: ERM: not trained."


def test_the_adjusted_p_value_and_the_interval_must_both_agree():
    assert decide(8, (1.0, 3.0), 0.01, higher_is_better=True) == "better"
    assert decide(8, (1.0, 3.0), 0.08, higher_is_better=True) == "no_difference"
    assert decide(8, (-0.5, 3.0), 0.01, higher_is_better=True) == "no_difference"
    assert decide(8, (-3.0, -1.0), 0.01, higher_is_better=False) == "better"
    assert decide(2, (1.0, 3.0), 0.01, higher_is_better=True) == "too_few_units"
    assert decide(0, None, None, higher_is_better=True) == "no_units"


def test_the_interval_is_the_bootstrap_of_the_unit_differences():
    found = comparison("ood_accuracy", [5 + e for e in NOISE])
    assert found.interval == bootstrap_interval(np.array(found.differences))


# --- Holm within a metric ----------------------------------------------------------------------

CLEAR, BORDERLINE, NULL = (
    [5.3, 4.7, 5.6, 5.5, 4.6, 5.2],
    [2.0, 3.0, -0.5, 4.0, 1.0, 2.5],  # t-test p = 0.027 alone
    [1.0, -2.0, 0.5, -1.0, 2.0, -0.5],
)


def test_holm_adjusts_each_metrics_family_and_can_withdraw_a_verdict():
    alone = comparison("ood_accuracy", BORDERLINE, "dre")
    assert alone.p_t == pytest.approx(0.0269, abs=1e-4) and alone.outcome == "better"
    family = [comparison("ood_accuracy", CLEAR, "erm"), alone,
              comparison("ood_accuracy", NULL, "irm")]
    adjusted = holm_family(family, ["erm", "dre", "irm"])
    raw = [c.p_t for c in family]
    assert [c.p_t_holm for c in adjusted] == holm_adjust(raw)
    # By hand: 0.0269 is the second smallest of three, so it is doubled: 0.054 >= 0.05.
    assert adjusted[1].p_t_holm == pytest.approx(2 * raw[1])
    assert [c.outcome for c in adjusted] == ["better", "no_difference", "no_difference"]
    assert {c.family_size for c in adjusted} == {3}


def test_a_method_read_from_anothers_runs_counts_once_in_the_family():
    family = [comparison("ood_accuracy", BORDERLINE, "m_gray"),
              comparison("ood_accuracy", BORDERLINE, "wo_eg"),
              comparison("ood_accuracy", CLEAR, "erm")]
    adjusted = holm_family(family, ["m_gray", "m_gray", "erm"])
    assert adjusted[0].p_t_holm == adjusted[1].p_t_holm == pytest.approx(
        holm_adjust([family[0].p_t, family[2].p_t])[0]
    )
    assert adjusted[0].family_size == 2


# --- units -------------------------------------------------------------------------------------


def test_a_units_value_is_its_mean_over_its_test_domains_or_why_not():
    cells = {
        ("gradient", 0): {"noise": 60.0, "stripes": 70.0},
        ("gradient", 1): {"noise": 50.0, "stripes": "not evaluated: stripes.json missing"},
        ("noise", 0): {"gradient": 40.0, "stripes": 44.0},
    }
    assert unit_values(cells) == {("gradient", 0): 65.0,
                                  ("gradient", 1): "not evaluated: stripes.json missing",
                                  ("noise", 0): 42.0}
    assert unit_values({("noise", 1): {}}) == {("noise", 1): "no test domain"}


def test_units_are_paired_and_incomplete_ones_left_out_with_the_reason():
    first = {("a", 0): 65.0, ("a", 1): "not trained", ("b", 0): 42.0, ("b", 1): 50.0}
    second = {("a", 0): 60.0, ("a", 1): 55.0, ("b", 0): 40.0, ("b", 1): "not evaluated"}
    assert pair_units(first, second, ("align", "erm")) == (
        (65.0, 42.0), (60.0, 40.0), ("ALIGN: not trained", "ERM: not evaluated")
    )


THREE_DOMAINS = ["gradient", "noise", "stripes"]


def ood_accuracy(method: str, train: str, seed: int, target: str) -> float:
    """Accuracies that differ by test domain, so a unit's mean is not any one of them."""
    base = {"erm": 50.0, "align": 60.0}[method]
    return base + 3 * seed + {"gradient": 0.0, "noise": 4.0, "stripes": 10.0}[target]


@pytest.fixture
def three_domains(tmp_path: Path):
    """erm and align trained on gradient and noise (3 seeds), tested on gradient, noise and
    stripes: 6 units, each with 2 test domains."""
    params = with_sections(
        grid_params(tmp_path, ["erm", "align"], [0, 1, 2]),
        datasets={"synthetic": {"domains": THREE_DOMAINS}},
        grid={"domains": THREE_DOMAINS[:2]},
    )
    runs = tmp_path / "runs"
    for method in ("erm", "align"):
        for train in THREE_DOMAINS[:2]:
            for seed in (0, 1, 2):
                run_dir = RunSpec("synthetic", train, method, seed).named_dir(runs)
                (run_dir / "eval").mkdir(parents=True)
                (run_dir / "model.pt").touch()
                for target in THREE_DOMAINS:
                    record = eval_record(method, train, seed, target)
                    if target != train:
                        record["accuracy"] = ood_accuracy(method, train, seed, target)
                    (run_dir / "eval" / f"{target}.json").write_text(json.dumps(record))
    return params, runs


def test_units_of_ood_accuracy_average_their_test_domains(three_domains):
    params, runs = three_domains
    evaluations = collect_evaluations(params, runs)
    found = next(c for c in comparisons(evaluations)
                 if (c.kind, c.metric.key, c.other) == ("align_vs", "ood_accuracy", "erm"))
    expected = [
        np.mean([ood_accuracy("align", train, seed, target)
                 for target in THREE_DOMAINS if target != train])
        for train in THREE_DOMAINS[:2] for seed in (0, 1, 2)
    ]
    assert (found.n, found.configured) == (6, 6)  # 2 train domains x 3 seeds, not x 2 domains
    assert found.reference_values == pytest.approx(expected)
    assert found.reference_values[0] == pytest.approx((64.0 + 70.0) / 2)  # gradient, seed 0
    assert found.mean_difference == pytest.approx(10.0)
    # ALIGN trained on gradient, seed 2, never tested on stripes: that model is left out whole.
    (evaluations.run_dir("align", "gradient", 2) / "eval" / "stripes.json").unlink()
    evaluations = collect_evaluations(params, runs)
    found = next(c for c in comparisons(evaluations)
                 if (c.kind, c.metric.key, c.other) == ("align_vs", "ood_accuracy", "erm"))
    assert (found.n, found.configured) == (5, 6)
    assert found.left_out[0].startswith("ALIGN: not evaluated")
    assert "gradient/align/seed2/eval/stripes.json" in found.left_out[0]
    markdown = to_markdown(evaluations, comparisons(evaluations), STAMP)
    assert markdown_rows(markdown)["ERM"][1] == "5 of 6"
    assert "ERM: 1 of 6 trained models left out (ALIGN: not evaluated" in markdown
    assert "The grid configures 6 trained models per method (2 train domains x 3 seeds)" in (
        markdown
    )


# --- the positive control ----------------------------------------------------------------------


def test_the_control_holds_only_with_enough_gain_a_small_p_and_a_ci_above_zero():
    assert CONTROL_MIN_GAIN == 10.0
    assert control_holds(6, 15.0, (12.0, 18.0), 0.001)
    assert not control_holds(6, 9.9, (8.0, 12.0), 0.001)  # real, but too small a gain
    assert not control_holds(6, 15.0, (12.0, 18.0), 0.05)
    assert not control_holds(6, 15.0, (-1.0, 30.0), 0.01)
    assert not control_holds(2, 15.0, (12.0, 18.0), 0.001)  # too few units
    assert not control_holds(6, None, None, None)


def test_the_control_says_whether_it_holds():
    holding = control([14.0, 16.5, 15.0, 13.0, 17.0, 15.5])
    assert holding.holds and holding.p_t < ALPHA
    assert holding.sentence().startswith(
        "The positive control holds: m-GT beats ERM out of distribution by +15.17 points on"
        " average over 6 trained models (95% CI ["
    )
    failing = control([3.0, 2.5, 3.5, 2.8, 3.2, 3.0])  # real (p < 0.05), but small
    assert not failing.holds and failing.p_t < ALPHA
    assert failing.sentence().startswith("The positive control FAILS: m-GT − ERM is +3.00 points")
    assert failing.sentence().endswith(
        ": a gain under 10 points; the benchmark cannot tell methods apart; read no row below as"
        " evidence."
    )
    few = control([15.0, 16.0])
    assert not few.holds and few.sentence().startswith("The positive control cannot be judged:")
    assert "read no row below as evidence" in few.sentence()


@pytest.fixture
def four_seeds(tmp_path: Path):
    """erm, align, dre, an unguided m_gray (which is w/o EG) and the oracle m_gt x 2 domains x 4
    seeds: ALIGN is 10 points below ERM in accuracy, 10 points lower (better) in sufficiency and
    equal in comprehensiveness; m-GT is 15 points above ERM out of distribution, give or take."""
    methods = ["erm", "align", "dre", "m_gray", "m_gt"]
    params = with_sections(grid_params(tmp_path, methods, [0, 1, 2, 3]),
                           methods={"m_gray": {"lambda3": 0.0}})
    runs = tmp_path / "runs"
    write_evals(runs, methods, [0, 1, 2, 3])
    jitter = iter([0.5, -1.0, 1.5, 0.0, -0.5, 2.0, -1.5, 1.0])
    for train, test in (("gradient", "noise"), ("noise", "gradient")):
        for seed in range(4):
            set_accuracy(runs, "m_gt", train, seed, test, 80 + 2 * seed + 15 + next(jitter))
    return params, collect_evaluations(params, runs)


def set_accuracy(runs: Path, method: str, train: str, seed: int, target: str, value: float):
    path = RunSpec("synthetic", train, method, seed).named_dir(runs) / "eval" / f"{target}.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "accuracy": value}))


def test_the_control_is_computed_over_units_and_kept_out_of_holm(four_seeds):
    _, evaluations = four_seeds
    found = comparisons(evaluations)
    first = found[0]
    assert (first.kind, first.reference, first.other, first.metric.key) == (
        "control", "m_gt", "erm", "ood_accuracy"
    )
    assert first.n == 8 and first.holds
    assert first.mean_difference == pytest.approx(15.0 + np.mean([0.5, -1, 1.5, 0, -0.5, 2,
                                                                  -1.5, 1]))
    assert first.p_t == pytest.approx(stats.ttest_rel(first.reference_values,
                                                      first.other_values).pvalue)
    rows = read_csv(to_csv(found, STAMP))
    assert (rows[0]["comparison"], rows[0]["reference"], rows[0]["method"]) == (
        "control", "m_gt", "erm"
    )
    assert rows[0]["verdict"] == "holds" and rows[0]["p_t_holm"] == ""
    assert rows[0]["n_units"] == "8" and rows[0]["p_wilcoxon"] != ""
    markdown = to_markdown(evaluations, found, STAMP)
    assert markdown.index("## Positive control: m-GT vs ERM") < markdown.index(
        "## How to read the verdict"
    )
    assert "**The positive control holds: m-GT beats ERM out of distribution by +15.25" in (
        markdown
    )
    assert "8" in markdown_rows(markdown.split("## How to read the verdict")[0])  # its row
    # ALIGN vs m-GT is an ordinary row of the OOD family: m-GT is a configured method.
    assert any(c.kind == "align_vs" and c.other == "m_gt" for c in found)
    numbers = json.loads(json.dumps(headline(evaluations, found)))["positive_control"]
    assert set(numbers) == {"ood_gain", "ci_low", "ci_high", "p_value", "n_units", "holds"}
    assert (numbers["n_units"], numbers["holds"]) == (8, 1)
    assert numbers["ood_gain"] == pytest.approx(15.25) and numbers["ci_low"] > 0


def test_a_control_that_fails_says_so_at_the_top(four_seeds):
    params, evaluations = four_seeds
    for train, test in (("gradient", "noise"), ("noise", "gradient")):
        for seed in range(4):  # the oracle no better than ERM: 80 + 2 * seed, give or take 1
            set_accuracy(evaluations.runs_root, "m_gt", train, seed, test,
                         80 + 2 * seed + (-1) ** seed)
    evaluations = collect_evaluations(params, evaluations.runs_root)
    found = comparisons(evaluations)
    assert not found[0].holds
    markdown = to_markdown(evaluations, found, STAMP)
    assert "**The positive control FAILS: m-GT − ERM is +0.00 points" in markdown
    assert "the benchmark cannot tell methods apart; read no row below as evidence.**" in markdown
    assert read_csv(to_csv(found, STAMP))[0]["verdict"] == "fails"
    assert headline(evaluations, found)["positive_control"]["holds"] == 0


def test_without_the_oracle_the_control_says_it_is_not_configured(tmp_path):
    params = grid_params(tmp_path, ["erm", "align"], [0, 1, 2])
    write_evals(tmp_path / "runs", ["erm", "align"], [0, 1, 2])
    evaluations = collect_evaluations(params, tmp_path / "runs")
    found = comparisons(evaluations)
    assert (found[0].kind, found[0].configured, found[0].holds) == ("control", 0, False)
    assert found[0].sentence() == (
        "There is no positive control (m-GT: m_gt not in grid.methods; add m_gt and erm to"
        " grid.methods): nothing shows that this benchmark can tell methods apart."
    )
    assert read_csv(to_csv(found, STAMP))[0]["verdict"] == "not_configured"
    assert headline(evaluations, found)["positive_control"] == {"n_units": 0, "holds": 0}


# --- the files ---------------------------------------------------------------------------------


def test_every_configured_unit_counts_and_each_method_gets_a_sentence(four_seeds):
    _, evaluations = four_seeds
    rows = [row for row in read_csv(to_csv(comparisons(evaluations), STAMP))
            if row["comparison"] == "align_vs"]
    by = {(row["metric"], row["method"]): row for row in rows}
    # Every other configured method and w/o EG (m_gray's runs), against ALIGN on four metrics.
    assert {method for _, method in by} == {"erm", "dre", "m_gray", "m_gt", "wo_eg"}
    assert len(rows) == 4 * 5
    assert {row["reference"] for row in rows} == {"align"}
    # Every metric: 2 train domains x 4 seeds = 8 trained models.
    assert {(row["n_units"], row["configured_units"]) for row in rows} == {("8", "8")}
    assert by[("ood_accuracy", "erm")]["verdict"] == "worse"
    assert float(by[("ood_accuracy", "erm")]["mean_difference"]) == pytest.approx(-10.0)
    assert by[("ood_accuracy", "dre")]["verdict"] == "better"  # DRE's base is 50, ALIGN's 70
    assert by[("sufficiency", "erm")]["sentence"] == "ALIGN is better than ERM (lower is better)."
    assert by[("comprehensiveness", "erm")]["verdict"] == "no_difference"
    assert by[("ood_accuracy", "wo_eg")]["mean_difference"] == (
        by[("ood_accuracy", "m_gray")]["mean_difference"]
    )
    # Holm within each metric: four distinct tests (w/o EG repeats m-Gray's).
    distinct = ["erm", "dre", "m_gray", "m_gt"]
    for metric in METRICS:
        family = {c.other: c for c in comparisons(evaluations)
                  if c.kind == "align_vs" and c.metric.key == metric}
        assert {c.family_size for c in family.values()} == {4}
        adjusted = holm_adjust([family[m].p_t for m in distinct])
        for method, p in zip(distinct, adjusted, strict=True):
            assert float(by[(metric, method)]["p_t_holm"]) == pytest.approx(p, rel=1e-5)
        assert by[(metric, "wo_eg")]["p_t_holm"] == by[(metric, "m_gray")]["p_t_holm"]
    assert {row["git_commit"] for row in rows} == {STAMP["git_commit"]}


def test_verdict_md_states_the_unit_the_rule_holm_and_the_provenance(four_seeds):
    _, evaluations = four_seeds
    markdown = to_markdown(evaluations, comparisons(evaluations), STAMP)
    assert "The unit is a trained model" in markdown
    assert "The grid configures 8 trained models per method (2 train domains x 4 seeds)" in (
        markdown
    )
    assert "alpha = 0.05" in markdown and "10,000 resamples" in markdown
    assert "ttest_rel" in markdown and "Holm's step-down method" in markdown
    assert "Pratt" in markdown and "fewer than 3 trained models" in markdown
    assert "unit = a trained model's mean over its test domains" in markdown
    assert "Holm family: 4 tests." in markdown
    erm = markdown_rows(markdown)["ERM"]
    assert (erm[1], erm[-1]) == ("8", "ALIGN is worse than ERM (higher is better).")
    assert "w/o EG is the same experiment as m-Gray" in markdown
    assert "Not compared (no configured runs): m-SAM" in markdown
    assert STAMP["git_commit"] in markdown and STAMP["params_hash"] in markdown


def test_without_align_there_is_nothing_to_compare(tmp_path):
    params = grid_params(tmp_path, ["erm"], [0])
    write_evals(tmp_path / "runs", ["erm"], [0])
    evaluations = collect_evaluations(params, tmp_path / "runs")
    found = comparisons(evaluations)
    assert [c.kind for c in found] == ["control"]
    assert "Nothing to compare: align not in grid.methods" in to_markdown(evaluations, found,
                                                                         STAMP)


def test_headline_holds_mean_accuracies_and_aligns_paired_ood_differences(four_seeds):
    _, evaluations = four_seeds
    found = comparisons(evaluations)
    numbers = json.loads(json.dumps(headline(evaluations, found)))  # what metrics.json holds
    assert set(numbers) == {"ood_accuracy", "id_accuracy", "align_vs", "positive_control"}
    # ERM's OOD accuracy is 80 + 2 * seed on both train domains.
    assert numbers["ood_accuracy"]["erm"] == pytest.approx(np.mean([80 + 2 * s for s in range(4)]))
    assert numbers["id_accuracy"]["align"] == pytest.approx(np.mean([75 + 2 * s for s in range(4)]))
    # Keyed by method id, as grid.methods and verdict.csv's `method`: every table's display
    # names stay in the Markdown.
    assert set(numbers["ood_accuracy"]) == set(numbers["id_accuracy"]) == {
        "erm", "dre", "align", "m_gray", "m_gt", "wo_eg"
    }
    assert set(numbers["align_vs"]) == {"erm", "dre", "m_gray", "m_gt", "wo_eg"}
    erm = numbers["align_vs"]["erm"]
    assert set(erm) == {"ood_diff", "ci_low", "ci_high", "p_t_holm"}
    assert erm["ood_diff"] == pytest.approx(-10.0)
    assert erm["p_t_holm"] == 0.0  # every unit exactly 10 points below: no spread
    dre = next(c for c in found if c.kind == "align_vs" and c.other == "dre"
               and c.metric.key == "ood_accuracy")
    assert dre.interval is not None  # rounded to 2 decimals, p to 3 significant digits
    assert numbers["align_vs"]["dre"] == {
        "ood_diff": round(dre.mean_difference, 2), "ci_low": round(dre.interval[0], 2),
        "ci_high": round(dre.interval[1], 2), "p_t_holm": float(f"{dre.p_t_holm:.3g}"),
    }


# --- the null simulation -----------------------------------------------------------------------

SIMULATIONS = 2000
SIM_UNITS = [(train, seed) for train in ("a", "b") for seed in range(3)]
SIM_TESTS = ("t1", "t2", "t3")


def test_the_unit_level_rule_keeps_its_false_positive_rate_where_cell_pairs_did_not():
    """No true difference between two methods; each trained model has its own effect (sd 10)
    shared by its 3 test domains, plus domain noise (sd 2): 6 units, 18 cells. The shipped unit
    path (unit means, pairing, t-test, bootstrap, `decide`; 200 resamples to stay fast) calls a
    difference in at most 5% of datasets, up to Monte Carlo error; pairing the 18 cells with the
    Wilcoxon test, as the verdict did before, calls one several times as often."""
    rng = np.random.default_rng(20240516)
    unit_calls = cell_calls = 0
    for _ in range(SIMULATIONS):
        domains = rng.normal(70, 5, len(SIM_TESTS))
        values = (domains + rng.normal(0, 10, (2, len(SIM_UNITS), 1))
                  + rng.normal(0, 2, (2, len(SIM_UNITS), len(SIM_TESTS))))
        cells = [{unit: dict(zip(SIM_TESTS, values[m, i], strict=True))
                  for i, unit in enumerate(SIM_UNITS)} for m in range(2)]
        first, second, left_out = pair_units(unit_values(cells[0]), unit_values(cells[1]),
                                             ("align", "erm"))
        assert len(first) == len(SIM_UNITS) and not left_out
        units = paired_differences(first, second)
        outcome = decide(len(units), bootstrap_interval(units, resamples=200),
                         paired_t_p(units), higher_is_better=True)
        unit_calls += outcome in ("better", "worse")
        # The old pairing: every (train domain, test domain, seed) cell a pair.
        pairs = paired_differences(values[0].ravel(), values[1].ravel())
        low, high = bootstrap_interval(pairs, resamples=200)
        cell_calls += wilcoxon_p(pairs) < ALPHA and not low <= 0 <= high
    error = np.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)
    assert unit_calls / SIMULATIONS <= ALPHA + 3 * error
    # Measured with this seed: 0.037 for units, 0.25 for cells; the test can fail, and did.
    assert cell_calls / SIMULATIONS > 0.15


def test_the_unit_rule_sees_a_true_difference_in_the_same_simulation():
    """The same simulation with a true gain of 40 points for ALIGN: called better."""
    rng = np.random.default_rng(1)
    values = (rng.normal(0, 10, (2, len(SIM_UNITS), 1))
              + rng.normal(0, 2, (2, len(SIM_UNITS), len(SIM_TESTS))))
    values[0] += 40.0
    first, second, _ = pair_units(
        *(unit_values({u: dict(zip(SIM_TESTS, values[m, i], strict=True))
                       for i, u in enumerate(SIM_UNITS)}) for m in range(2)),
        ("align", "erm"),
    )
    assert Comparison(OOD_ACCURACY, "erm", len(first), first, second).outcome == "better"
