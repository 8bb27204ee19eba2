"""The benchmark scripts run and print the JSON they promise (tiny settings: this checks they work,
not how fast anything is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SYNTHETIC, make_params

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, *arguments: str, cwd: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(BENCH / script), *arguments], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_step_time_reports_every_method_against_erm():
    report = run_bench("step_time.py", "--methods", "erm", "align", "sgt", "--size", "32",
                       "--batch", "4", "--steps", "1", "--warmup", "0", "--layer4-stride", "1")
    assert set(report["ratio_to_erm"]) == {"erm", "align", "sgt"}
    assert report["ratio_to_erm"]["erm"] == 1.0 and report["setting"]["layer4_stride"] == 1


def test_levers_compare_every_setting_with_the_reference():
    report = run_bench("levers.py", "--steps", "1", "--warmup", "0", "--batch", "2",
                       "--skip-compile")
    results = report["seconds_per_step_and_ratios"]
    reference = results["reference (64 px, 2x2 CAM), 1 thread(s)"]
    assert reference["erm_vs_reference"] == 1.0
    assert any("bf16" in label for label in results)
    assert any("fused Adam" in label for label in results)
    assert all(entry["align_vs_erm"] > 0 for entry in results.values())
    assert report["torch_compile"] == "skipped"


def test_loader_bench_compares_the_shard_reader_with_raw_files():
    report = run_bench("loader.py", "--images", "40", "--repeats", "1", "--workers", "0",
                       "--sizes", "32", "--batch-size", "8")
    assert report


def test_pipeline_bench_times_every_stage_and_method(tmp_path):
    raw = make_params(Path("data"), **TINY_SYNTHETIC).model_dump(mode="json")
    raw["grid"] = {"methods": ["erm", "align"], "domains": ["gradient"], "seeds": [0]}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    report = run_bench("pipeline.py", "--params", str(params_file),
                       "--scratch", str(tmp_path / "scratch"))
    assert set(report["seconds_by_stage"]) == {
        "acquire", "split", "shard", "sam_masks", "train", "evaluate", "report"
    }
    assert set(report["seconds_by_method"]) == {"erm", "align"}
    assert report["train_time_ratio_to_erm"]["erm"] == 1.0
    assert (tmp_path / "scratch" / "results" / "ood_table.csv").is_file()


def test_curves_record_every_validation_with_ood_accuracy_and_explanation_quality(tmp_path):
    raw = make_params(Path("data"), **TINY_SYNTHETIC).model_dump(mode="json")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    report = run_bench("curves.py", "--method", "align", "--params", str(params_file),
                       "--set", "datasets.synthetic.spurious_p=1.0",
                       "--scratch", str(tmp_path / "scratch"))
    steps, every = raw["train"]["steps"], raw["train"]["eval_every"]
    assert [point["step"] for point in report["curve"]] == list(range(every, steps + 1, every))
    first = report["curve"][0]
    assert set(first["ood"]) == set(raw["datasets"]["synthetic"]["domains"]) - {"gradient"}
    assert 0 <= first["masker_iou"] <= 100 and 0 <= first["cam_inside"] <= 1
    for name in ("cam", "masker"):  # shares of the map's mass, in %, summing to 100
        shares = [first[f"{name}_on_{region}"] for region in ("object", "shortcut", "elsewhere")]
        assert sum(shares) == pytest.approx(100, abs=0.2) or first["masker_mean"] == 0
    assert report["overrides"] == ["datasets.synthetic.spurious_p=1.0"]
    written = next((tmp_path / "scratch").glob("data-*/raw/synthetic"))
    assert written.is_dir()  # the data lives in the scratch folder


def test_jobs_bench_trains_the_same_runs_both_ways(tmp_path):
    raw = make_params(Path("data"), **TINY_SYNTHETIC).model_dump(mode="json")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    report = run_bench("jobs.py", "--params", str(params_file), "--methods", "erm",
                       "--seeds", "0", "1", "--steps", "4", "--scratch", str(tmp_path / "s"))
    assert report["runs"] == ["erm seed 0", "erm seed 1"] and report["steps"] == 4
    assert report["two_jobs_speedup"] > 0
    assert len(list((tmp_path / "s" / "runs").glob("synthetic/gradient/erm/seed*"))) == 2


SNAKEMAKE_LOG = """\
[Thu Dec  3 12:10:02 2026]
localrule train:
    output: runs/synthetic/gradient/erm/seed0/model.pt
    jobid: 6
    wildcards: dataset=synthetic, domain=gradient, method=erm, seed=0
    threads: 1
[Thu Dec  3 12:10:02 2026]
localrule train:
    jobid: 7
    wildcards: dataset=synthetic, domain=gradient, method=align, seed=0
2026-12-03 12:11:01,542 align.train INFO erm: best val accuracy 0.8567 at step 150
[Thu Dec  3 12:11:02 2026]
Finished jobid: 6 (Rule: train)
1 of 3 steps (33%) done
[Thu Dec  3 12:11:02 2026]
localrule evaluate:
    jobid: 8
    wildcards: dataset=synthetic, domain=gradient, method=erm, seed=0
[Thu Dec  3 12:11:20 2026]
Finished jobid: 8 (Rule: evaluate)
[Thu Dec  3 12:13:02 2026]
Finished jobid: 7 (Rule: train)
"""


def test_pipeline_reads_the_split_by_stage_and_method_from_a_snakemake_log(tmp_path):
    log = tmp_path / "make-run.log"
    log.write_text(SNAKEMAKE_LOG)
    report = run_bench("pipeline.py", "--snakemake-log", str(log))
    assert report["jobs"] == 3 and report["wall_seconds"] == 180
    assert report["job_seconds_by_rule"] == {"train": 240, "evaluate": 18}
    assert report["job_seconds_by_method"] == {"erm": {"train": 60, "evaluate": 18},
                                               "align": {"train": 180, "evaluate": 0}}
    assert report["train_time_ratio_to_erm"] == {"erm": 1.0, "align": 3.0}


@pytest.mark.slow
def test_gpu_check_runs_every_part_and_says_it_measured_the_cpu(tmp_path):
    """bench/gpu_check.py at its smallest on the CPU, so that the GPU's one call cannot rot. The
    tiny grid runs in this process (`--tiny-runner inprocess`): through Snakemake every job
    imports torch anew, minutes on this machine."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--image-size", "32",
         "--batch", "4", "--steps", "2", "--threads", "1", "--tiny-runner", "inprocess",
         "--tiny-methods", "align", "--tiny-domains", "gradient",
         "--scratch", str(tmp_path / "scratch")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    report = json.loads(result.stdout)
    parts = report["parts"]
    assert {name: part.get("error") for name, part in parts.items()} == dict.fromkeys(
        ("tiny_grid", "step_time", "paper_preset"))
    assert result.returncode == 0 and report["passed"]
    assert report["device_type"] == "cpu" and report["device"].startswith("cpu")
    assert "no GPU" in report["device"] and report["torch"]
    assert all(part["seconds"] > 0 and part["peak_gpu_memory_gib"] is None
               for part in parts.values())
    assert parts["tiny_grid"]["grid"]["methods"] == ["align"]
    assert parts["tiny_grid"]["seconds_by_stage"]["report"] > 0
    assert (tmp_path / "scratch" / "tiny" / "results" / "ood_table.csv").is_file()
    steps = parts["step_time"]
    assert steps["setting"]["size"] == 32 and steps["align_vs_erm"] > 0
    assert steps["erm"]["median_seconds_per_step"] > 0
    preset = parts["paper_preset"]
    assert preset["preset_dataset"] == "vlcs" and preset["methods"] == ["erm", "align"]
    assert preset["steps"] == 2 and preset["train_time_ratio_to_erm"]["erm"] == 1.0


@pytest.mark.slow
def test_gpu_check_reports_a_failed_part_and_runs_the_next(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--image-size", "32",
         "--batch", "2", "--steps", "1", "--threads", "1", "--parts", "paper_preset",
         "step_time", "--preset", str(tmp_path / "missing.yaml"),
         "--scratch", str(tmp_path / "scratch")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 1 and not report["passed"]
    failed = report["parts"]["paper_preset"]
    assert not failed["passed"] and "missing.yaml" in failed["error"]
    assert "\n" not in failed["error"]
    assert report["parts"]["step_time"]["passed"]
