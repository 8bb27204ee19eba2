"""The report stage: table layout, seed summaries, bold best values, reasons for missing cells,
provenance, and figures of real (tiny) trained runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_params, with_sections
from PIL import Image
from scipy import stats

from align.cli import main
from align.config import Params
from align.device import pick_device
from align.provenance import provenance
from align.report import write_report
from align.report.collect import collect_evaluations
from align.report.examples import first_test_images, masker_masks
from align.report.figures import mask_gallery_figure, mask_label
from align.report.tables import (
    ablation_table,
    id_table,
    mask_quality_table,
    ood_table,
    table_metrics,
    to_csv,
    to_markdown,
)
from align.runs import RunSpec
from align.train import train_run

PROJECT = Path(__file__).resolve().parents[1]

DOMAINS = ["gradient", "noise"]
SAM_REASON = "SAM checkpoint not provided (set sam.checkpoint)"
STAMP = {"git_commit": "abc123", "params_hash": "1a2b3c4d"}


FIRST_SELECTABLE = {"erm": 1, "dre": 1, "align": 101, "m_gray": 101}


def selected_step(method: str, seed: int) -> int:
    """The checkpoint step a fixture run kept: different per method and seed."""
    return {"erm": 300, "align": 250, "m_gray": 200, "dre": 150}[method] - 10 * seed


def eval_record(method: str, train: str, seed: int, target: str) -> dict[str, Any]:
    """An evaluate-stage record with known numbers: ERM is the most accurate, ALIGN has the
    lowest sufficiency; every number moves by the seed, so the std over seeds 0 and 1 is known."""
    base = {"erm": 80.0, "align": 70.0, "m_gray": 60.0, "dre": 50.0}[method]
    in_distribution = train == target
    record: dict[str, Any] = {
        "dataset": "synthetic", "train_domain": train, "method": method, "seed": seed,
        "target_domain": target, "in_distribution": in_distribution, "split": "test",
        "accuracy": base + 5 * in_distribution + 2 * seed, "auc": 90.0 + seed, "auc_note": "",
        "num_samples": 24, "sufficiency": None, "comprehensiveness": None,
        "mask_quality": {}, "background_blur": {}, "unavailable": {"sam": SAM_REASON},
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


def markdown_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell, as lists of cells (the first table's row where
    two tables share a first cell)."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    found: dict[str, list[str]] = {}
    for cells in rows:
        found.setdefault(cells[0].strip(), [c.strip() for c in cells])
    return found


def ci(*values: float) -> str:
    """The expected `mean ± half-width` of a cell over seeds, from scipy's t interval."""
    mean = float(np.mean(values))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return f"{mean:.2f} ± {(high - low) / 2:.2f}"


def test_id_table_has_a_row_per_method_and_a_column_per_domain_and_metric(grid):
    _, evaluations = grid
    table = id_table(evaluations)
    metrics = ["Acc", "AUC", "Suff", "Comp"]
    expected_columns = [f"{d}/{m}" for d in DOMAINS for m in metrics]
    assert [c.key for c in table.columns] == expected_columns
    rows = read_csv(to_csv(table, STAMP))
    assert [row["Method"] for row in rows] == ["ERM", "ALIGN"]  # m_gray belongs to Table 2
    assert list(rows[0]) == ["Method", *expected_columns, "selected_steps", "git_commit",
                             "params_hash"]
    erm, align = rows
    assert erm["gradient/Acc"] == f"{ci(85, 87)} (n=2)"
    assert align["gradient/Suff"] == f"{ci(10, 11)} (n=2)"
    assert "not evaluated" in align["noise/Acc"]
    assert "synthetic/noise/align/seed1/eval/noise.json" in align["noise/Acc"]
    assert {row["git_commit"] for row in rows} == {"abc123"}
    assert table_metrics(table)["erm"]["gradient/Acc"] == 86.0
    assert "noise/Acc" not in table_metrics(table)["align"]  # no number, no metric


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
    rows = read_csv(to_csv(table, STAMP))
    assert rows[1]["selected_steps"] == (
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
    rows = read_csv(to_csv(table, STAMP))
    assert [(r["Train on"], r["Test on"]) for r in rows] == [("gradient", "noise"),
                                                            ("noise", "gradient")]
    assert [c.key for c in table.columns] == ["ERM", "ALIGN"]
    assert rows[0]["ERM"] == f"{ci(80, 82)} (n=2)"
    assert rows[1]["ERM"] == "80.00 (n=1 of 2, no interval)"  # seed 1 was not evaluated
    assert "not evaluated" in rows[1]["ALIGN"]
    markdown = markdown_rows(to_markdown(table, STAMP))
    assert markdown["gradient"][2] == f"**{ci(80, 82)}** (n=2)"
    assert markdown["gradient"][3] == f"{ci(70, 72)} (n=2)"
    assert markdown["noise"][2].startswith("**80.00** (n=1 of 2 [")


def test_ablation_rows_say_why_they_are_missing(grid):
    _, evaluations = grid
    rows = read_csv(to_csv(ablation_table(evaluations), STAMP))
    by_method = {row["Method"]: row for row in rows}
    assert list(by_method) == ["w/o EG", "m-SAM", "m-Gray", "m-GT", "ALIGN"]
    assert by_method["w/o EG"]["gradient/Acc"] == "wo_eg not in grid.methods"
    assert by_method["m-SAM"]["gradient/Acc"].startswith("m_sam not in grid.methods (")
    assert "SAM" in by_method["m-SAM"]["gradient/Acc"]
    assert by_method["m-Gray"]["gradient/Acc"] == f"{ci(65, 67)} (n=2)"


def test_an_ablation_that_is_the_same_experiment_as_a_configured_method_reads_its_runs(tmp_path):
    unguided = {"methods": {"m_gray": {"lambda3": 0}}}  # m-Gray with no guidance is w/o EG
    params = with_sections(grid_params(tmp_path, ["m_gray"], [0]), **unguided)
    write_evals(tmp_path / "runs", ["m_gray"], [0])
    table = ablation_table(collect_evaluations(params, tmp_path / "runs"))
    assert read_csv(to_csv(table, STAMP))[0]["gradient/Acc"] == "65.00 (n=1, no interval)"
    assert "same experiment as m-Gray" in to_markdown(table, STAMP)


def test_mask_quality_table_has_masker_uniform_reference_sam_and_each_methods_gradcam(grid):
    _, evaluations = grid
    table = mask_quality_table(evaluations)
    metrics = ("IoU", "Dice", "Pointing", "Inside", "Outside", "Spread")
    assert [c.key for c in table.columns] == [f"{d}/{m}" for d in DOMAINS for m in metrics]
    rows = {row["Mask"]: row for row in read_csv(to_csv(table, STAMP))}
    assert list(rows) == ["Masker (ALIGN)", "Uniform mask (all ones)", "SAM", "Grad-CAM (ERM)",
                          "Grad-CAM (ALIGN)", "Grad-CAM (m-Gray)"]
    masker, uniform = rows["Masker (ALIGN)"], rows["Uniform mask (all ones)"]
    assert masker["gradient/IoU"] == f"{ci(40, 41)} (n=2)"
    assert masker["gradient/Spread"] == f"{ci(30, 31)} (n=2)"
    assert uniform["gradient/Spread"] == "0.00 ± 0.00 (n=2)"
    assert uniform["gradient/IoU"] == "12.00 ± 0.00 (n=2)"
    assert rows["SAM"]["gradient/IoU"] == SAM_REASON
    assert rows["Grad-CAM (ERM)"]["gradient/Dice"] == "25.00 ± 0.00 (n=2)"
    # Inside, outside and spread are descriptive: the all-ones map's inside of 100 is not bold.
    markdown = markdown_rows(to_markdown(table, STAMP))
    header = markdown["Mask"]
    assert markdown["Masker (ALIGN)"][header.index("gradient/IoU")].startswith("**")
    assert "**" not in markdown["Uniform mask (all ones)"][header.index("gradient/Inside")]


# --- the whole stage, with real trained runs ----------------------------------------------------


@pytest.fixture(scope="module")
def report(tiny_synthetic: Params, tmp_path_factory: pytest.TempPathFactory):
    """erm and align trained for two steps on both tiny domains, hand-written eval records,
    and the report written from them."""
    torch.set_num_threads(1)
    params = with_sections(
        tiny_synthetic,
        grid={"methods": ["erm", "align"], "seeds": [0]},
        train={"steps": 2, "eval_every": 2, "checkpoint_every": 2},
        methods={"align": {"warmup_steps": 1}},
    )
    root = tmp_path_factory.mktemp("report")
    runs, results = root / "runs", root / "results"
    for method in ("erm", "align"):
        for domain in DOMAINS:
            train_run(params, RunSpec("synthetic", domain, method, 0), runs, show_progress=False)
    write_evals(runs, ["erm", "align"], [0])
    return params, runs, results, write_report(params, runs, results)


def test_report_writes_every_table_and_records_provenance(report):
    params, _, results, written = report
    stamp = provenance(params)
    names = {path.relative_to(results).as_posix() for path in written}
    for table in ("id_table", "ablation_table", "ood_table", "mask_quality"):
        assert {f"{table}.csv", f"{table}.md"} <= names
        rows = read_csv((results / f"{table}.csv").read_text())
        assert {(r["git_commit"], r["params_hash"]) for r in rows} == {
            (stamp["git_commit"], stamp["params_hash"])
        }
        assert stamp["params_hash"] in (results / f"{table}.md").read_text()
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["id_table"]["erm"]["gradient/Acc"] == 85.0
    assert metrics["provenance"] == stamp
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


def test_report_writes_the_verdict_and_the_headline_metrics(report):
    params, _, results, written = report
    names = {path.relative_to(results).as_posix() for path in written}
    assert {"verdict.md", "verdict.csv"} <= names
    rows = read_csv((results / "verdict.csv").read_text())
    # ALIGN against ERM on 4 metrics; one seed: 2 OOD pairs (gradient <-> noise), 2 ID pairs.
    assert [(row["metric"], row["method"]) for row in rows] == [
        ("ood_accuracy", "erm"), ("id_accuracy", "erm"), ("sufficiency", "erm"),
        ("comprehensiveness", "erm"),
    ]
    assert {(row["n_pairs"], row["configured_pairs"]) for row in rows} == {("2", "2")}
    assert {row["verdict"] for row in rows} == {"too_few_pairs"}
    assert {row["params_hash"] for row in rows} == {provenance(params)["params_hash"]}
    markdown = (results / "verdict.md").read_text()
    assert "Too few pairs (2) to detect a difference between ALIGN and ERM" in markdown
    assert provenance(params)["git_commit"] in markdown
    headline = json.loads((results / "metrics.json").read_text())["headline"]
    assert headline["ood_accuracy"] == {"erm": 80.0, "align": 70.0}
    erm = headline["align_vs"]["erm"]
    assert {key: erm[key] for key in ("ood_accuracy_diff", "ci_low", "ci_high", "n_pairs")} == {
        "ood_accuracy_diff": -10.0, "ci_low": -10.0, "ci_high": -10.0, "n_pairs": 2,
    }
    assert erm["p_value"] == pytest.approx(stats.wilcoxon([-10.0, -10.0]).pvalue)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        # Panels of 1.5 x 1.75 in at 300 dpi, and a 0.25 in footer.
        ("fig4_case_study.png", (3 * 450, 2 * 525 + 75)),  # image + 2 methods; 2 domains
        ("fig5_mask_gallery.png", (4 * 450, 4 * 525 + 75)),  # 4 columns; 2 domains x 2 images
        ("fig2_mask_quality.png", (2 * 600, 1050)),  # 2 domain panels of 2 in; 3.5 in high
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
