"""The report stage: table layout, seed summaries, bold best values, reasons for missing cells,
provenance, and figures of real (tiny) trained runs."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import make_params, markdown_rows, with_sections
from PIL import Image
from scipy import stats

from align.cli import main
from align.config import Params
from align.device import pick_device
from align.provenance import provenance
from align.report import write_report
from align.report.collect import collect_evaluations, measurements_csv
from align.report.examples import first_test_images, masker_masks
from align.report.figures import (
    attention_figure,
    blur_bars,
    blur_figure,
    case_study_figure,
    mask_gallery_figure,
    mask_label,
)
from align.report.table_files import to_csv, to_markdown
from align.report.tables import (
    ablation_table,
    attention_table,
    id_table,
    mask_quality_table,
    ood_table,
)
from align.runs import RunSpec

PROJECT = Path(__file__).resolve().parents[1]

DOMAINS = ["gradient", "noise"]
SAM_REASON = "SAM checkpoint not provided (set sam.checkpoint)"
STAMP = {"git_commit": "abc123", "params_hash": "1a2b3c4d"}


FIRST_SELECTABLE = {"erm": 1, "dre": 1, "align": 101, "m_gray": 101, "m_gt": 101}


def selected_step(method: str, seed: int) -> int:
    """The checkpoint step a fixture run kept: different per method and seed."""
    return {"erm": 300, "align": 250, "m_gray": 200, "dre": 150, "m_gt": 350}[method] - 10 * seed


def eval_record(method: str, train: str, seed: int, target: str) -> dict[str, Any]:
    """An evaluate-stage record with known numbers: ERM is the most accurate, ALIGN has the
    lowest sufficiency (the oracle m-GT aside, the most accurate out of distribution); every
    number moves by the seed, so the std over seeds 0 and 1 is known."""
    base = {"erm": 80.0, "align": 70.0, "m_gray": 60.0, "dre": 50.0, "m_gt": 95.0}[method]
    in_distribution = train == target
    record: dict[str, Any] = {
        "dataset": "synthetic", "train_domain": train, "method": method, "seed": seed,
        "target_domain": target, "in_distribution": in_distribution, "split": "test",
        "accuracy": base + 5 * in_distribution + 2 * seed, "auc": 90.0 + seed, "auc_note": "",
        "num_samples": 24, "sufficiency": None, "comprehensiveness": None,
        "mask_quality": {}, "attention": {}, "background_blur": {},
        "unavailable": {"sam": SAM_REASON},
        "git_commit": "eval-commit", "params_hash": "evalhash",
        "selected_step": selected_step(method, seed),
    }
    if in_distribution:
        quality = {"iou": 20.0 + seed, "dice": 25.0, "pointing_game": 50.0, "inside": 60.0,
                   "outside": 30.0, "spread": 10.0 + seed, "mean_value": 40.0, "num_images": 24,
                   "num_empty_gt": 0}
        record["sufficiency"] = {"erm": 20.0, "align": 10.0}.get(method, 15.0) + seed
        record["comprehensiveness"] = 30.0
        record["mask_quality"] = {"gradcam": quality, "uniform": {
            **quality, "iou": 12.0, "dice": 21.0, "pointing_game": 12.0, "inside": 100.0,
            "outside": 100.0, "spread": 0.0, "mean_value": 100.0,
        }}
        record["background_blur"] = {"none": record["accuracy"], "gt": record["accuracy"] + 3}
        # Grad-CAM on the shortcut by the method (ERM 50%, ALIGN 20%), and the seed.
        on_shortcut = {"erm": 50.0, "align": 20.0}.get(method, 30.0) + seed
        record["attention"] = {
            "gradcam": {"object": 40.0, "shortcut": on_shortcut, "elsewhere": 60.0 - on_shortcut,
                        "num_images": 24, "num_no_mass": 0},
            "uniform": {"object": 20.0, "shortcut": 5.0, "elsewhere": 75.0, "num_images": 24,
                        "num_no_mass": 0},
        }
        if method == "align":
            record["mask_quality"]["masker"] = {**quality, "iou": 40.0 + seed, "inside": 70.0,
                                                "outside": 20.0, "spread": 30.0 + seed}
            record["background_blur"]["masker"] = record["accuracy"] + 1
        else:
            record["unavailable"]["masker"] = f"{method} trains no masker"
    return record


def write_evals(runs_root: Path, methods: list[str], seeds: list[int]) -> None:
    for method in methods:
        for train in DOMAINS:
            for seed in seeds:
                run_dir = RunSpec("synthetic", train, method, seed).named_dir(runs_root)
                (run_dir / "eval").mkdir(parents=True, exist_ok=True)
                (run_dir / "model.pt").touch()
                # Replaced, not written through: a trained run's file is a link to its
                # read-only stored copy.
                (run_dir / "metrics.json").unlink(missing_ok=True)
                (run_dir / "metrics.json").write_text(json.dumps({
                    "selected_step": selected_step(method, seed),
                    "first_selectable_step": FIRST_SELECTABLE[method],
                }))
                for target in DOMAINS:
                    record = eval_record(method, train, seed, target)
                    (run_dir / "eval" / f"{target}.json").write_text(json.dumps(record))


def grid_params(root: Path, methods: list[str], seeds: list[int]) -> Params:
    return make_params(
        root / "data",
        datasets={"synthetic": {"domains": DOMAINS}},
        grid={"methods": methods, "domains": DOMAINS, "seeds": seeds},
    )


@pytest.fixture
def grid(tmp_path: Path):
    """Eval records of erm, align and m_gray x 2 domains x 2 seeds, some of them missing."""
    params = grid_params(tmp_path, ["erm", "align", "m_gray"], [0, 1])
    runs = tmp_path / "runs"
    write_evals(runs, ["erm", "align", "m_gray"], [0, 1])
    # ERM trained on noise, seed 1, never evaluated on gradient: that cell has one seed.
    (runs / "synthetic/noise/erm/seed1/eval/gradient.json").unlink()
    # ALIGN trained on noise was never evaluated at all.
    for seed in (0, 1):
        for target in DOMAINS:
            (runs / f"synthetic/noise/align/seed{seed}/eval/{target}.json").unlink()
    return params, collect_evaluations(params, runs)


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def ci(*values: float) -> str:
    """The expected `mean ± half-width` of a cell over seeds, from scipy's t interval."""
    mean = float(np.mean(values))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return f"{mean:.2f} ± {(high - low) / 2:.2f}"


def csv_cells(text: str) -> dict[tuple[str, ...], dict[str, str]]:
    """A table CSV's rows (one per cell) by (index labels..., column key)."""
    rows = read_csv(text)
    index = list(rows[0])[:list(rows[0]).index("column")] if rows else []
    return {(*(row[key] for key in index), row["column"]): row for row in rows}


def assert_cell(row: dict[str, str], *values: float, configured: int | None = None) -> None:
    """A CSV cell holds numbers: the mean over `values`, the ends of scipy's 95% t interval
    (empty for one value), the number of values and of configured seeds, and no `±` text."""
    mean = float(np.mean(values))
    assert float(row["mean"]) == pytest.approx(mean, rel=1e-5)
    if len(values) == 1:
        assert (row["ci_low"], row["ci_high"]) == ("", "")
    else:
        spread = float(np.std(values)) > 0
        low, high = stats.t.interval(0.95, len(values) - 1, loc=mean,
                                     scale=stats.sem(values)) if spread else (mean, mean)
        assert float(row["ci_low"]) == pytest.approx(low, rel=1e-5, abs=1e-9)
        assert float(row["ci_high"]) == pytest.approx(high, rel=1e-5, abs=1e-9)
    assert (row["n"], row["n_configured"]) == (str(len(values)), str(configured or len(values)))
    assert "±" not in "".join(row.values())


def test_id_table_has_a_row_per_method_and_a_column_per_domain_and_metric(grid):
    _, evaluations = grid
    table = id_table(evaluations)
    metrics = ["Acc", "AUC", "Suff", "Comp"]
    expected_columns = [f"{d}/{m}" for d in DOMAINS for m in metrics]
    assert [c.key for c in table.columns] == expected_columns
    rows = read_csv(to_csv(table, STAMP))
    assert list(rows[0]) == ["Method", "column", "mean", "ci_low", "ci_high", "n",
                             "n_configured", "note", "selected_steps", "git_commit",
                             "params_hash"]
    # A row per cell: m_gray belongs to Table 2.
    assert [(row["Method"], row["column"]) for row in rows] == [
        (method, column) for method in ("ERM", "ALIGN") for column in expected_columns
    ]
    cells = csv_cells(to_csv(table, STAMP))
    assert_cell(cells[("ERM", "gradient/Acc")], 85, 87)
    assert_cell(cells[("ALIGN", "gradient/Suff")], 10, 11)
    missing = cells[("ALIGN", "noise/Acc")]
    assert (missing["mean"], missing["n"], missing["n_configured"]) == ("", "0", "2")
    assert "not evaluated" in missing["note"]
    assert "synthetic/noise/align/seed1/eval/noise.json" in missing["note"]
    assert cells[("ERM", "gradient/Acc")]["note"] == ""
    assert {row["git_commit"] for row in rows} == {"abc123"}


def test_markdown_bolds_the_best_per_column_lower_sufficiency_being_better(grid):
    _, evaluations = grid
    markdown = to_markdown(id_table(evaluations), STAMP)
    rows = markdown_rows(markdown)
    header = rows["Method"]
    erm, align = rows["ERM"], rows["ALIGN"]
    acc, suff = header.index("gradient/Acc"), header.index("gradient/Suff")
    assert erm[acc] == f"**{ci(85, 87)}** (n=2)" and align[acc] == f"{ci(75, 77)} (n=2)"
    assert align[suff] == f"**{ci(10, 11)}** (n=2)" and "**" not in erm[suff]
    # A cell without a number points to a note that says why.
    assert align[header.index("noise/Acc")].startswith("n/a [")
    assert "not evaluated" in markdown and "abc123" in markdown and "1a2b3c4d" in markdown


def test_tables_show_the_checkpoint_step_each_run_selected(grid):
    _, evaluations = grid
    table = id_table(evaluations)
    markdown = to_markdown(table, STAMP)
    steps = markdown_rows(markdown[markdown.index("Selected checkpoints"):])
    assert steps["Method"] == ["Method", "first selectable", "gradient", "noise"]
    assert steps["ERM"] == ["ERM", "1", "300, 290", "300, 290"]
    # ALIGN on noise was never evaluated: its steps come from the runs' metrics.json.
    assert steps["ALIGN"] == ["ALIGN", "101", "250, 240", "250, 240"]
    assert "seeds 0, 1 in that order" in markdown
    rows = csv_cells(to_csv(table, STAMP))
    assert rows[("ALIGN", "gradient/Acc")]["selected_steps"] == (
        "gradient: 250, 240 (seeds 0, 1; selectable from 101);"
        " noise: 250, 240 (seeds 0, 1; selectable from 101)"
    )
    ood = read_csv(to_csv(ood_table(evaluations), STAMP))
    assert ood[0]["selected_steps"].startswith("ERM: 300, 290 (seeds 0, 1; selectable from 1);")
    assert "Selected checkpoints" in to_markdown(ablation_table(evaluations), STAMP)


def test_a_step_is_unknown_without_an_eval_record_or_metrics_json(grid):
    params, evaluations = grid
    (evaluations.run_dir("erm", "noise", 1) / "metrics.json").unlink()
    (evaluations.run_dir("erm", "noise", 1) / "eval" / "noise.json").unlink()
    steps = collect_evaluations(params, evaluations.runs_root).selected_steps("erm", "noise")
    assert steps.text() == "300, n/a" and steps.first_selectable == 1


def test_ood_table_has_a_row_per_domain_pair_and_bolds_the_best_method(grid):
    _, evaluations = grid
    table = ood_table(evaluations)
    rows = csv_cells(to_csv(table, STAMP))
    assert list(rows) == [("gradient", "noise", "ERM"), ("gradient", "noise", "ALIGN"),
                          ("noise", "gradient", "ERM"), ("noise", "gradient", "ALIGN")]
    assert [c.key for c in table.columns] == ["ERM", "ALIGN"]
    assert_cell(rows[("gradient", "noise", "ERM")], 80, 82)
    # Seed 1 was not evaluated: one seed, no interval, and why.
    assert_cell(rows[("noise", "gradient", "ERM")], 80, configured=2)
    assert "not evaluated" in rows[("noise", "gradient", "ERM")]["note"]
    assert "not evaluated" in rows[("noise", "gradient", "ALIGN")]["note"]
    markdown = markdown_rows(to_markdown(table, STAMP))
    assert markdown["gradient"][2] == f"**{ci(80, 82)}** (n=2)"
    assert markdown["gradient"][3] == f"{ci(70, 72)} (n=2)"
    assert markdown["noise"][2].startswith("**80.00** (n=1 of 2 [")


def test_ablation_rows_say_why_they_are_missing(grid):
    _, evaluations = grid
    rows = csv_cells(to_csv(ablation_table(evaluations), STAMP))
    assert list(dict.fromkeys(method for method, _ in rows)) == [
        "w/o EG", "m-SAM", "m-Gray", "m-GT", "ALIGN"
    ]
    assert rows[("w/o EG", "gradient/Acc")]["note"] == "wo_eg not in grid.methods"
    assert rows[("w/o EG", "gradient/Acc")]["mean"] == ""
    assert rows[("m-SAM", "gradient/Acc")]["note"].startswith("m_sam not in grid.methods (")
    assert "SAM" in rows[("m-SAM", "gradient/Acc")]["note"]
    assert_cell(rows[("m-Gray", "gradient/Acc")], 65, 67)


def test_an_ablation_that_is_the_same_experiment_as_a_configured_method_reads_its_runs(tmp_path):
    unguided = {"methods": {"m_gray": {"lambda3": 0}}}  # m-Gray with no guidance is w/o EG
    params = with_sections(grid_params(tmp_path, ["m_gray"], [0]), **unguided)
    write_evals(tmp_path / "runs", ["m_gray"], [0])
    table = ablation_table(collect_evaluations(params, tmp_path / "runs"))
    assert_cell(csv_cells(to_csv(table, STAMP))[("w/o EG", "gradient/Acc")], 65)
    assert "same experiment as m-Gray" in to_markdown(table, STAMP)


def test_mask_quality_table_has_masker_uniform_reference_sam_and_each_methods_gradcam(grid):
    _, evaluations = grid
    table = mask_quality_table(evaluations)
    metrics = ("IoU", "Dice", "Pointing", "Inside", "Outside", "Spread")
    assert [c.key for c in table.columns] == [f"{d}/{m}" for d in DOMAINS for m in metrics]
    rows = csv_cells(to_csv(table, STAMP))
    assert list(dict.fromkeys(mask for mask, _ in rows)) == [
        "Masker (ALIGN)", "Uniform mask (all ones)", "SAM", "Grad-CAM (ERM)",
        "Grad-CAM (ALIGN)", "Grad-CAM (m-Gray)",
    ]
    assert_cell(rows[("Masker (ALIGN)", "gradient/IoU")], 40, 41)
    assert_cell(rows[("Masker (ALIGN)", "gradient/Spread")], 30, 31)
    assert_cell(rows[("Uniform mask (all ones)", "gradient/Spread")], 0, 0)
    assert_cell(rows[("Uniform mask (all ones)", "gradient/IoU")], 12, 12)
    assert rows[("SAM", "gradient/IoU")]["note"] == SAM_REASON
    assert_cell(rows[("Grad-CAM (ERM)", "gradient/Dice")], 25, 25)
    # Inside, outside and spread are descriptive: the all-ones map's inside of 100 is not bold.
    markdown = markdown_rows(to_markdown(table, STAMP))
    header = markdown["Mask"]
    assert markdown["Masker (ALIGN)"][header.index("gradient/IoU")].startswith("**")
    assert "**" not in markdown["Uniform mask (all ones)"][header.index("gradient/Inside")]


# --- the whole stage, with real trained runs ----------------------------------------------------


# The fixture `report` (erm and align trained, the report written) is tests/conftest.py's: one
# per session, shared with tests/test_results_page.py.


def test_report_writes_every_table_and_records_provenance(report):
    params, _, results, written = report
    stamp = provenance(params)
    names = {path.relative_to(results).as_posix() for path in written}
    for table in ("id_table", "ablation_table", "ood_table", "mask_quality", "attention"):
        assert {f"{table}.csv", f"{table}.md"} <= names
        rows = read_csv((results / f"{table}.csv").read_text())
        assert {(r["git_commit"], r["params_hash"]) for r in rows} == {
            (stamp["git_commit"], stamp["params_hash"])
        }
        assert stamp["params_hash"] in (results / f"{table}.md").read_text()
    metrics = json.loads((results / "metrics.json").read_text())
    # The headline only, for dvc metrics/exp show; every table's numbers are in its CSV.
    assert set(metrics) == {"ood_accuracy", "id_accuracy", "align_vs", "positive_control"}
    recorded = json.loads((results / "provenance.json").read_text())
    assert recorded["git_commit"] == stamp["git_commit"] and len(recorded["inputs"]) == 8
    fig2 = read_csv((results / "fig2.csv").read_text())
    assert len(fig2) == 2 * 2 * 4  # domains x methods x mask sources
    sam = [row for row in fig2 if row["mask_source"] == "sam"]
    assert {row["accuracy_mean"] for row in sam} == {""} and sam[0]["note"] == SAM_REASON
    # ERM's "ALIGN masker" bars: measured with the align run's masker of the same domain and seed.
    erm_masker = [r for r in fig2 if r["method"] == "erm" and r["mask_source"] == "masker"]
    assert len(erm_masker) == 2 and all(0 <= float(r["accuracy_mean"]) <= 100 for r in erm_masker)
    assert not list(results.rglob("*.tmp"))


def test_the_report_written_again_later_is_the_same_bytes(report, tmp_path):
    """The report is a function of its inputs: written again (a second later, as on another
    machine or a SLURM node) every file is byte for byte the same, so DVC's cache and the store
    hold one copy and a local and a cluster run agree (tests/test_slurm.py)."""
    params, runs, results, written = report
    time.sleep(1.1)  # past a wall-clock stamp's resolution
    again = write_report(params, runs, tmp_path / "results")
    assert sorted(p.relative_to(tmp_path / "results") for p in again) == sorted(
        p.relative_to(results) for p in written)
    changed = [p.relative_to(results).as_posix() for p in written
               if p.read_bytes() != (tmp_path / "results" / p.relative_to(results)).read_bytes()]
    assert changed == []


def test_report_writes_the_verdict_and_the_headline_metrics(report):
    params, _, results, written = report
    names = {path.relative_to(results).as_posix() for path in written}
    assert {"verdict.md", "verdict.csv", "measurements.csv"} <= names
    rows = read_csv((results / "verdict.csv").read_text())
    # The positive control (its oracle is not configured), then ALIGN against ERM on 4 metrics;
    # one seed: 2 trained models (one per train domain) for each.
    assert [(row["comparison"], row["metric"], row["method"]) for row in rows] == [
        ("control", "ood_accuracy", "erm"), ("align_vs", "ood_accuracy", "erm"),
        ("align_vs", "id_accuracy", "erm"), ("align_vs", "sufficiency", "erm"),
        ("align_vs", "comprehensiveness", "erm"),
    ]
    control, *versus = rows
    assert (control["reference"], control["verdict"], control["n_units"]) == (
        "m_gt", "not_configured", "0"
    )
    assert {(row["n_units"], row["configured_units"]) for row in versus} == {("2", "2")}
    assert {row["verdict"] for row in versus} == {"too_few_units"}
    assert {row["params_hash"] for row in rows} == {provenance(params)["params_hash"]}
    markdown = (results / "verdict.md").read_text()
    assert markdown.index("## Positive control: m-GT vs ERM") < markdown.index("## Out-of")
    assert "There is no positive control (m-GT: m_gt not in grid.methods" in markdown
    assert "Too few trained models (2) to detect a difference between ALIGN and ERM" in markdown
    assert provenance(params)["git_commit"] in markdown
    headline = json.loads((results / "metrics.json").read_text())
    assert headline["ood_accuracy"] == {"erm": 80.0, "align": 70.0}
    # Every unit 10 points below: no spread, so the t-test's p is its limit, 0.
    assert headline["align_vs"]["erm"] == {
        "ood_diff": -10.0, "ci_low": -10.0, "ci_high": -10.0, "p_t_holm": 0.0,
    }
    assert headline["positive_control"] == {"n_units": 0, "holds": 0}
    assert (results / "synthetic" / "measurements.csv").read_text() == (
        results / "measurements.csv"
    ).read_text()


def test_measurements_are_every_number_of_every_eval_record_in_long_form(grid):
    _, evaluations = grid
    rows = read_csv(measurements_csv(evaluations, STAMP))
    assert list(rows[0]) == ["method", "train_domain", "target_domain", "seed",
                             "in_distribution", "metric", "value", "git_commit", "params_hash"]
    by = {(r["method"], r["train_domain"], r["target_domain"], r["seed"], r["metric"]): r
          for r in rows}
    assert len(by) == len(rows)  # one row per (run, target domain, metric)
    assert by[("erm", "gradient", "noise", "1", "accuracy")]["value"] == "82"
    assert by[("erm", "gradient", "noise", "1", "accuracy")]["in_distribution"] == "False"
    assert by[("align", "gradient", "gradient", "0", "sufficiency")]["value"] == "10"
    assert by[("align", "gradient", "gradient", "1", "mask_quality.masker.iou")]["value"] == "41"
    assert by[("erm", "noise", "noise", "0", "mask_quality.uniform.inside")]["value"] == "100"
    assert by[("erm", "noise", "noise", "0", "background_blur.gt")]["value"] == "88"
    assert by[("erm", "noise", "noise", "1", "attention.gradcam.shortcut")]["value"] == "51"
    metrics = {r["metric"] for r in rows}
    assert {"auc", "comprehensiveness", "mask_quality.gradcam.pointing_game"} <= metrics
    assert not [m for m in metrics if "num_" in m]  # counts are not measurements
    # Out of distribution only accuracy and AUC are measured; a run never evaluated has no row.
    assert {r["metric"] for r in rows if r["in_distribution"] == "False"} == {"accuracy", "auc"}
    assert not [r for r in rows if (r["method"], r["train_domain"]) == ("align", "noise")]
    assert {r["git_commit"] for r in rows} == {"abc123"}


def test_measurements_hold_a_stand_in_s_runs_once(tmp_path):
    params = with_sections(grid_params(tmp_path, ["m_gray"], [0]),
                           methods={"m_gray": {"lambda3": 0}})  # w/o EG reads m-Gray's runs
    write_evals(tmp_path / "runs", ["m_gray"], [0])
    rows = read_csv(measurements_csv(collect_evaluations(params, tmp_path / "runs"), STAMP))
    assert {r["method"] for r in rows} == {"m_gray"}


@pytest.mark.parametrize(
    ("name", "size"),
    [
        # Panels of 1.5 x 1.75 in at 300 dpi, a 0.5 in colourbar beside them, a 0.25 in footer.
        ("fig4_case_study.png", (3 * 450 + 150, 2 * 525 + 75)),  # image + 2 methods; 2 domains
        ("fig5_mask_gallery.png", (4 * 450 + 150, 4 * 525 + 75)),  # 4 columns; 2 x 2 images
        ("fig2_mask_quality.png", (2 * 600, 1050)),  # 2 domain panels of 2 in; 3.5 in high
        # 2.5 in + 2.25 in per domain; 0.6 in + 0.16 in per map with a value (2 Grad-CAMs, the
        # uniform map) + legend and footer.
        ("attention.png", (round(300 * (2.5 + 2 * 2.25)), round(300 * (0.6 + 3 * 0.16 + 0.75)))),
    ],
)
def test_figures_open_at_their_fixed_size_with_provenance(report, name, size):
    params, _, results, _ = report
    with Image.open(results / "figures" / name) as image:
        image.load()
        assert image.size == size
        assert image.info["git_commit"] == provenance(params)["git_commit"]


def test_mask_gallery_says_why_sam_masks_are_missing(report):
    params, runs, _, _ = report
    figure = mask_gallery_figure(collect_evaluations(params, runs), STAMP, pick_device())
    texts = " ".join(t.get_text().replace("\n", " ") for ax in figure.axes for t in ax.texts)
    assert "no SAM mask status" in texts


def test_results_pointing_at_a_file_is_one_line(tmp_path, capsys):
    results = tmp_path / "results.csv"
    results.write_text("a file, not a folder\n")
    code = main(["--params", str(PROJECT / "params.yaml"), "report",
                 "--runs-root", str(tmp_path / "runs"), "--results", str(results)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--results {results}: a file" in err
    assert results.read_text() == "a file, not a folder\n"


def test_a_mask_label_gives_its_iou_and_spread_in_percent():
    half = torch.zeros(1, 8, 8)
    half[..., 4:] = 1
    assert mask_label(half, half) == "IoU 100.0 | spread 50.0"
    assert mask_label(torch.full((1, 8, 8), 0.4), half) == "IoU 0.0 | spread 0.0"
    assert mask_label(half, "no ground truth") == "spread 50.0"
    assert mask_label(half, torch.zeros(1, 8, 8)) == "IoU n/a | spread 50.0"


def test_mask_gallery_labels_each_masker_mask_with_its_iou_and_spread(report):
    params, runs, _, _ = report
    evaluations = collect_evaluations(params, runs)
    figure = mask_gallery_figure(evaluations, STAMP, pick_device())
    labels = [ax.get_xlabel() for ax in figure.axes]
    images = first_test_images(params, "noise", 2)
    masks = masker_masks(evaluations.run_dir("align", "noise", 0), images, pick_device())
    for i in range(2):
        assert mask_label(masks[i], images.gt_masks[i]) in labels
    assert sum(label.startswith("object ") for label in labels) == 4  # 2 domains x 2 images


def test_the_attention_table_says_where_each_map_sits_over_seeds(grid):
    _, evaluations = grid
    table = attention_table(evaluations)
    rows = {row.key: row for row in table.rows}
    assert [c.key for c in table.columns][:3] == [
        "gradient/Object", "gradient/Shortcut", "gradient/Elsewhere"
    ]
    assert not any(column.ranked for column in table.columns)
    # Seeds 0 and 1 put 50 and 51% of ERM's Grad-CAM on the shortcut: mean 50.5, n = 2.
    shortcut = rows["gradcam_erm"].cells["gradient/Shortcut"]
    assert (shortcut.mean, shortcut.n) == (50.5, 2)
    assert rows["gradcam_align"].cells["gradient/Shortcut"].mean == 20.5
    # ALIGN trained on noise was never evaluated: the reason stands in the cell.
    assert rows["gradcam_align"].cells["noise/Object"].n == 0
    # Maps that do not depend on the classifier: the uniform one from any run; no GT in these
    # records, so its row says why.
    assert rows["uniform"].cells["noise/Shortcut"].mean == 5.0
    assert rows["gt"].cells["gradient/Object"].n == 0
    csv_rows = read_csv(to_csv(table, STAMP))
    erm = next(r for r in csv_rows if r["Map"] == "Grad-CAM (ERM)" and
               r["column"] == "gradient/Shortcut")
    assert float(erm["mean"]) == 50.5 and erm["n"] == "2"


def test_a_folder_dataset_without_declared_domains_reports_every_domain_it_was_split_into(
    tmp_path,
):
    # `folder` with `domains: null` trains and evaluates on every domain found on disk (the split
    # lists them); the report read only the declared ones and left Table 3 empty.
    params = make_params(tmp_path / "data", dataset="folder",
                         datasets={"folder": {"root": str(tmp_path / "pacs")}},
                         grid={"methods": ["erm"], "domains": ["art"], "seeds": [0]})
    assert params.dataset_domains() == []
    splits = tmp_path / "data" / "splits"
    splits.mkdir(parents=True)
    (splits / "folder.json").write_text(json.dumps(
        {"domains": {"art": {}, "cartoon": {}, "photo": {}}}
    ))
    evaluations = collect_evaluations(params, tmp_path / "runs")
    assert evaluations.target_domains == ["art", "cartoon", "photo"]
    assert [row.key for row in ood_table(evaluations).rows] == ["art->cartoon", "art->photo"]


def test_dvc_yaml_declares_exactly_the_report_files() -> None:
    # The report's files are listed once (REPORT_FILES); DVC's stage cannot read Python, so it
    # is checked here instead (Snakemake's rule reads the list).
    from align.report import REPORT_FILES

    stage = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())[
        "stages"]["report"]
    declared = [*stage["outs"], *stage["metrics"],
                *(next(iter(plot)) if isinstance(plot, dict) else plot for plot in stage["plots"])]
    expected = {"results/${dataset}"} | {f"results/{Path(name).parts[0]}" for name in REPORT_FILES}
    assert sorted(declared) == sorted(expected)


# --- what the figures say ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draw", "colours", "meaning"),
    [(case_study_figure, "jet", "Grad-CAM of the true class"),
     (mask_gallery_figure, "gray", "Mask value")],
)
def test_fig4_and_fig5_have_a_colourbar_saying_what_the_colour_means_and_its_range(
    report, draw, colours, meaning
):
    params, runs, _, _ = report
    figure = draw(collect_evaluations(params, runs), STAMP, pick_device())
    (colourbar,) = [ax._colorbar for ax in figure.axes if hasattr(ax, "_colorbar")]
    assert colourbar.cmap.name == colours
    assert (colourbar.norm.vmin, colourbar.norm.vmax) == (0, 1)
    assert colourbar.ax.get_ylim() == (0, 1)
    assert meaning in colourbar.ax.get_ylabel()


def test_fig2_panels_name_the_training_domain_and_the_legend_what_was_blurred(grid):
    _, evaluations = grid
    figure = blur_figure(evaluations, blur_bars(evaluations), STAMP)
    assert [ax.get_title() for ax in figure.axes] == [
        "trained on gradient,\ntested on its test split",
        "trained on noise,\ntested on its test split",
    ]
    # The records hold the unblurred, GT-mask and (ALIGN's) masker bars.
    legend = figure.legends[0]
    assert legend.get_title().get_text() == "Blurred in the test images:"
    assert [text.get_text() for text in legend.get_texts()] == [
        "nothing", "background outside the GT mask", "background outside ALIGN's masker"
    ]


def error_bar_ends(ax, axis: int) -> list[float]:
    """Both ends of every error bar drawn on `ax` along `axis` (0: x, 1: y)."""
    return [
        float(end)
        for container in ax.containers if getattr(container, "errorbar", None) is not None
        for collection in container.errorbar.lines[2]
        for segment in collection.get_segments()
        for end in np.reshape(segment, (-1, 2))[:, axis] if np.isfinite(end)
    ]


def test_fig2_axes_hold_every_error_bar_whole(grid):
    _, evaluations = grid
    figure = blur_figure(evaluations, blur_bars(evaluations), STAMP)
    ends = {ax.get_title(): error_bar_ends(ax, 1) for ax in figure.axes}
    # ERM's GT-mask bar on gradient: 88 and 90 over two seeds, 89 ± 12.71.
    assert max(ends["trained on gradient,\ntested on its test split"]) > 100
    for ax in figure.axes:
        low, high = ax.get_ylim()
        assert low <= min(ends[ax.get_title()]) and max(ends[ax.get_title()]) <= high


def test_the_attention_figure_holds_every_error_bar_whole(grid):
    _, evaluations = grid
    # ERM's Grad-CAM on the shortcut of gradient: 58 and 60%, so 40 + 59 ± 12.71 reaches 111.7.
    for address, record in evaluations.records.items():
        if (address.method, address.train_domain, address.target_domain) == (
            "erm", "gradient", "gradient"
        ):
            record["attention"]["gradcam"].update(shortcut=58.0 + 2 * address.seed, elsewhere=1.0)
    figure = attention_figure(attention_table(evaluations), STAMP)
    ends = {ax.get_title(): error_bar_ends(ax, 0) for ax in figure.axes}
    assert max(ends["trained on gradient (its test split)"]) > 100
    for ax in figure.axes:
        low, high = ax.get_xlim()
        assert low <= min(ends[ax.get_title()]) and max(ends[ax.get_title()]) <= high
