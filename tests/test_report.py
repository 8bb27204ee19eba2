"""The report stage: table layout, seed summaries, bold best values, reasons for missing cells,
provenance, and figures of real (tiny) trained runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_params, with_sections
from PIL import Image

from align.config import Params
from align.device import pick_device
from align.provenance import provenance
from align.report import write_report
from align.report.collect import Summary, collect_evaluations
from align.report.figures import mask_gallery_figure
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

DOMAINS = ["gradient", "noise"]
SAM_REASON = "SAM checkpoint not provided (set sam.checkpoint)"
STAMP = {"git_commit": "abc123", "params_hash": "1a2b3c4d"}


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
    }
    if in_distribution:
        quality = {"iou": 20.0 + seed, "dice": 25.0, "pointing_game": 50.0, "num_images": 24,
                   "num_empty_gt": 0}
        record["sufficiency"] = {"erm": 20.0, "align": 10.0}.get(method, 15.0) + seed
        record["comprehensiveness"] = 30.0
        record["mask_quality"] = {"gradcam": quality}
        record["background_blur"] = {"none": record["accuracy"], "gt": record["accuracy"] + 3}
        if method == "align":
            record["mask_quality"]["masker"] = {**quality, "iou": 40.0 + seed}
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
    """Markdown table rows by their first cell, as lists of cells."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows}


def test_summary_is_mean_and_sample_std_over_seeds_with_their_number():
    assert Summary((85.0, 87.0), 2).text() == "86.00 ± 1.41 (n=2)"
    assert Summary((85.0,), 2, ((1, "why"),)).text() == "85.00 (n=1 of 2)"
    assert Summary((), 2, ((0, "why"), (1, "why"))).text() == "why"
    assert Summary((), 2, ((0, "a"), (1, "b"))).text() == "seed 0: a; seed 1: b"


def test_id_table_has_a_row_per_method_and_a_column_per_domain_and_metric(grid):
    _, evaluations = grid
    table = id_table(evaluations)
    metrics = ["Acc", "AUC", "Suff", "Comp"]
    expected_columns = [f"{d}/{m}" for d in DOMAINS for m in metrics]
    assert [c.key for c in table.columns] == expected_columns
    rows = read_csv(to_csv(table, STAMP))
    assert [row["Method"] for row in rows] == ["ERM", "ALIGN"]  # m_gray belongs to Table 2
    assert list(rows[0]) == ["Method", *expected_columns, "git_commit", "params_hash"]
    erm, align = rows
    assert erm["gradient/Acc"] == "86.00 ± 1.41 (n=2)"
    assert align["gradient/Suff"] == "10.50 ± 0.71 (n=2)"
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
    assert erm[acc] == "**86.00 ± 1.41** (n=2)" and align[acc] == "76.00 ± 1.41 (n=2)"
    assert align[suff] == "**10.50 ± 0.71** (n=2)" and "**" not in erm[suff]
    # A cell without a number points to a note that says why.
    assert align[header.index("noise/Acc")].startswith("n/a [")
    assert "not evaluated" in markdown and "abc123" in markdown and "1a2b3c4d" in markdown


def test_ood_table_has_a_row_per_domain_pair_and_bolds_the_best_method(grid):
    _, evaluations = grid
    table = ood_table(evaluations)
    rows = read_csv(to_csv(table, STAMP))
    assert [(r["Train on"], r["Test on"]) for r in rows] == [("gradient", "noise"),
                                                            ("noise", "gradient")]
    assert [c.key for c in table.columns] == ["ERM", "ALIGN"]
    assert rows[0]["ERM"] == "81.00 ± 1.41 (n=2)"
    assert rows[1]["ERM"] == "80.00 (n=1 of 2)"  # seed 1 was not evaluated
    assert "not evaluated" in rows[1]["ALIGN"]
    markdown = markdown_rows(to_markdown(table, STAMP))
    assert markdown["gradient"][2] == "**81.00 ± 1.41** (n=2)"
    assert markdown["gradient"][3] == "71.00 ± 1.41 (n=2)"
    assert markdown["noise"][2].startswith("**80.00** (n=1 of 2 [")


def test_ablation_rows_say_why_they_are_missing(grid):
    _, evaluations = grid
    rows = read_csv(to_csv(ablation_table(evaluations), STAMP))
    by_method = {row["Method"]: row for row in rows}
    assert list(by_method) == ["w/o EG", "m-SAM", "m-Gray", "m-GT", "ALIGN"]
    assert by_method["w/o EG"]["gradient/Acc"] == "wo_eg not in grid.methods"
    assert by_method["m-SAM"]["gradient/Acc"].startswith("m_sam not in grid.methods (")
    assert "SAM" in by_method["m-SAM"]["gradient/Acc"]
    assert by_method["m-Gray"]["gradient/Acc"] == "66.00 ± 1.41 (n=2)"


def test_an_ablation_that_is_the_same_experiment_as_a_configured_method_reads_its_runs(tmp_path):
    unguided = {"methods": {"m_gray": {"lambda3": 0}}}  # m-Gray with no guidance is w/o EG
    params = with_sections(grid_params(tmp_path, ["m_gray"], [0]), **unguided)
    write_evals(tmp_path / "runs", ["m_gray"], [0])
    table = ablation_table(collect_evaluations(params, tmp_path / "runs"))
    assert read_csv(to_csv(table, STAMP))[0]["gradient/Acc"] == "65.00 (n=1)"
    assert "same experiment as m-Gray" in to_markdown(table, STAMP)


def test_mask_quality_table_has_masker_sam_and_each_methods_gradcam(grid):
    _, evaluations = grid
    table = mask_quality_table(evaluations)
    assert [c.key for c in table.columns] == [
        f"{d}/{m}" for d in DOMAINS for m in ("IoU", "Dice", "Pointing")
    ]
    rows = {row["Mask"]: row for row in read_csv(to_csv(table, STAMP))}
    assert list(rows) == ["Masker (ALIGN)", "SAM", "Grad-CAM (ERM)", "Grad-CAM (ALIGN)",
                          "Grad-CAM (m-Gray)"]
    assert rows["Masker (ALIGN)"]["gradient/IoU"] == "40.50 ± 0.71 (n=2)"
    assert rows["SAM"]["gradient/IoU"] == SAM_REASON
    assert rows["Grad-CAM (ERM)"]["gradient/Dice"] == "25.00 ± 0.00 (n=2)"


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
