"""The one call that checks the GPU path: three parts, each timed and reported pass or fail.

    python bench/gpu_check.py [--device auto|cuda|cpu] [--image-size 224] [--batch 32]
                              [--steps 20] [--threads N] [--parts tiny_grid step_time paper_preset]
                              [--tiny-runner snakemake|inprocess] [--scratch /tmp/align-gpu-check]

1. `tiny_grid`: configs/tiny.yaml end to end through Snakemake (every stage, each job its own
   `align` process, two jobs at a time with `--threads` shared between them), in a scratch folder:
   on a GPU that exercises bf16 autocast, channels-last, DataLoader workers (`threads - 1` per job)
   and the GPU locks (two jobs, one GPU: one waits for the other's lock; the job logs are counted).
   `--tiny-runner inprocess` runs the same stage functions in this process instead (no locks, no
   process start per job: the tests use it, because each job's `import torch` costs seconds here).
2. `step_time`: ERM and ALIGN seconds per training step at `--image-size` (bench/step_time.py's
   measurement: stock ResNet-18, bf16 where the device computes it, channels-last, fused Adam),
   ALIGN's as a ratio to ERM's measured in the same run.
3. `paper_preset`: a few steps of configs/paper_vlcs.yaml (`--preset`): its model, optimiser,
   loader and precision settings, trained and evaluated for ERM and ALIGN, on synthetic images at
   `--image-size` (the preset's photographs need a download); ImageNet weights only when they are
   already in torch's cache, SAM not at all (m_sam is left out).

Prints JSON: the device measured ("cpu ..." when no GPU was used: then nothing here is a GPU
figure), torch and CUDA versions, and per part: passed, seconds, peak GPU memory and its figures,
or the error line of a part that failed (the next part still runs; the traceback goes to stderr).
Exits 1 when any part failed. The GPU locks live in the scratch folder, so a GPU busy with other
`align` jobs is shared, not waited for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from pipeline import split_from_log
from step_time import Setting, step_times
from torchvision.models import ResNet18_Weights

from align.config import Params, load_params, parse_params
from align.data.acquire import acquire_dataset
from align.data.shards import write_shards
from align.data.split import write_split
from align.device import LOCK_DIR_ENV, computes_in_bf16
from align.evaluate import evaluate_run
from align.masks.sam import write_sam_masks
from align.report import write_report
from align.runs import TRAINING_METRICS_FILE, RunSpec
from align.threads import loader_workers, use_threads
from align.train import train_run

REPO = Path(__file__).resolve().parents[1]
PARTS = ("tiny_grid", "step_time", "paper_preset")
OFFLINE_METHODS = ("erm", "align")
"""The preset's methods run by `paper_preset`: ERM, the reference, and ALIGN, the paper's."""


class CheckFailed(Exception):
    """A part ran but its outputs are not what the GPU path should give."""


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} {torch.cuda.get_device_name(device)}"
    return (f"cpu ({platform.processor() or platform.machine()}): no GPU was used, every "
            "figure here is the CPU's")


def peak_gpu_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


class GpuMemoryPoll:
    """Peak memory in use on the GPUs (all processes, by nvidia-smi once a second): the jobs of
    Snakemake's runner allocate in their own processes, out of torch's sight here."""

    def __init__(self) -> None:
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        command = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                used = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
                self.peak_mib = max([self.peak_mib or 0.0, *map(float, used.split())])
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self._stop.wait(1.0)

    def __enter__(self) -> GpuMemoryPoll:
        if torch.cuda.is_available() and shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def gib(self) -> float | None:
        return None if self.peak_mib is None else round(self.peak_mib / 1024, 3)


# --- the pipeline, in this process -----------------------------------------------------------


def grid_specs(params: Params) -> list[RunSpec]:
    return [RunSpec(params.dataset, domain, method, seed) for domain in params.grid.domains or []
            for method in params.grid.methods for seed in params.grid.seeds]


def run_inprocess(params: Params, root: Path, report: bool) -> dict[str, Any]:
    """Every stage's function for the grid of `params` (data under its `data.root`, runs and
    results under `root`), each timed as bench/pipeline.py times them."""
    stages: dict[str, float] = defaultdict(float)
    train_seconds: dict[str, float] = defaultdict(float)

    def timed(label: str, work: Callable[..., Any], *arguments: Any) -> float:
        started = time.perf_counter()
        work(*arguments)
        seconds = time.perf_counter() - started
        stages[label] += seconds
        return seconds

    for label, work in (("acquire", acquire_dataset), ("split", write_split),
                        ("shard", write_shards), ("sam_masks", write_sam_masks)):
        timed(label, work, params, params.dataset)
    for spec in grid_specs(params):
        train_seconds[spec.method] += timed(
            "train", lambda s: train_run(params, s, root / "runs", show_progress=False), spec)
    for spec in grid_specs(params):
        timed("evaluate", lambda s: evaluate_run(params, s, root / "runs", show_progress=False),
              spec)
    if report:
        timed("report", write_report, params, root / "runs", root / "results")
    erm = train_seconds.get("erm")
    return {
        "seconds_by_stage": {k: round(v, 2) for k, v in stages.items()},
        "train_seconds_by_method": {k: round(v, 2) for k, v in train_seconds.items()},
        "train_time_ratio_to_erm": {
            k: round(v / erm, 2) for k, v in train_seconds.items()} if erm else None,
    }


def check_devices(params: Params, runs: Path, device: torch.device) -> None:
    """Every run of the grid says it trained on `device`'s kind (its metrics.json)."""
    for spec in grid_specs(params):
        metrics = json.loads((spec.named_dir(runs) / TRAINING_METRICS_FILE).read_text())
        if metrics["device"] != device.type:
            raise CheckFailed(f"{spec.named_dir(runs)} trained on {metrics['device']}, "
                              f"not on {device.type}")


# --- the three parts -------------------------------------------------------------------------


def tiny_grid(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """configs/tiny.yaml's grid end to end, by Snakemake (or in this process)."""
    work = args.scratch / "tiny"
    work.mkdir(parents=True)
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
    raw["grid"].update({k: v for k, v in (("methods", args.tiny_methods),
                                          ("domains", args.tiny_domains)) if v})
    (work / "params.yaml").write_text(yaml.safe_dump(raw))  # data.root: relative, in `work`
    raw.setdefault("data", {})["root"] = str(work / "data")
    params = parse_params(raw)
    snakemake = args.tiny_runner == "snakemake"
    per_job = max(args.threads // 2, 1) if snakemake else args.threads  # 2 jobs at a time
    use_threads(per_job)  # so that loader_workers answers as it does in such a job
    figures: dict[str, Any] = {
        "grid": raw["grid"], "runner": args.tiny_runner, "threads_per_job": per_job,
        "loader_workers_per_job": loader_workers(params.data.loader_workers,
                                                 device.type == "cuda"),
        "bf16": computes_in_bf16(params.model.precision, device),
    }
    if not snakemake:
        figures.update(run_inprocess(params, work, report=True))
        figures["peak_gpu_memory_gib"] = peak_gpu_gib()
    else:
        log = work / "snakemake.log"
        command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                   "--directory", str(work), "--config", "params=params.yaml",
                   "--cores", str(args.threads),
                   "--set-threads", f"train={per_job}", f"evaluate={per_job}"]
        with GpuMemoryPoll() as memory, log.open("w") as out:
            finished = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
        figures["peak_gpu_memory_gib"] = memory.gib()  # every process on the GPU, polled
        figures["snakemake_log"] = str(log)
        text = log.read_text(errors="replace")
        if finished.returncode != 0:
            lines = text.splitlines()
            lines = [line for line in lines if "error" in line.lower()] or lines
            raise CheckFailed(f"snakemake exited {finished.returncode} ({log}): "
                              f"{lines[-1] if lines else 'no output'}")
        figures.update(split_from_log(text))
        job_logs = [path.read_text(errors="replace") for path in (work / "logs").rglob("*.log")]
        figures["jobs_that_took_a_gpu_lock"] = sum("is this job's" in t for t in job_logs)
        figures["jobs_that_waited_for_a_gpu"] = sum("waiting for one" in t for t in job_logs)
        took = figures["jobs_that_took_a_gpu_lock"]
        if device.type == "cuda" and took < len(grid_specs(params)):
            raise CheckFailed(f"only {took} job logs say they took a GPU lock; every training "
                              "job should")
    check_devices(params, work / "runs", device)
    if not (work / "results" / "ood_table.csv").is_file():
        raise CheckFailed(f"no {work / 'results' / 'ood_table.csv'}: the report did not run")
    return figures


def step_time(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """ERM and ALIGN seconds per step at `--image-size`, through bench/step_time.py."""
    use_threads(args.threads)
    setting = Setting(size=args.image_size, batch=args.batch, layer4_stride=2,
                      bf16=computes_in_bf16("auto", device), channels_last=True,
                      fused_adam=True)
    figures: dict[str, Any] = {"setting": asdict(setting)}
    for method in OFFLINE_METHODS:
        first, median = step_times(method, setting, args.steps)
        figures[method] = {"first_step_seconds": round(first, 4),
                           "median_seconds_per_step": round(median, 4),
                           "images_per_second": round(args.batch / median, 1)}
    figures["align_vs_erm"] = round(figures["align"]["median_seconds_per_step"]
                                    / figures["erm"]["median_seconds_per_step"], 3)
    figures["peak_gpu_memory_gib"] = peak_gpu_gib()
    return figures


def preset_params(args: argparse.Namespace, root: Path) -> tuple[Params, dict[str, Any]]:
    """The preset, made to run here in a few steps: synthetic images at `--image-size` in its
    dataset's place, ERM and ALIGN on one domain and seed, ALIGN's warm-up half the steps."""
    raw = load_params(args.preset).model_dump(mode="json")
    notes: dict[str, Any] = {"preset": str(args.preset), "preset_dataset": raw["dataset"]}
    size, steps = args.image_size, args.steps
    raw["dataset"] = "synthetic"
    raw["data"].update(root=str(root / "data"), store_size=size, image_size=size)
    synthetic = raw["datasets"]["synthetic"]
    # enough images for one full batch of the 60% train split, in two domains
    synthetic.update(image_size=size, images_per_domain=max(2 * args.batch + 10, 30),
                     domains=synthetic["domains"][:2])
    methods = [m for m in raw["grid"]["methods"] if m in OFFLINE_METHODS]
    raw["grid"] = {"methods": methods, "domains": synthetic["domains"][:1], "seeds": [0]}
    raw["train"].update(steps=steps, batch_size=args.batch, eval_every=steps,
                        checkpoint_every=steps)
    for method in methods:
        config = raw["methods"][method]
        if "warmup_steps" in config:
            config["warmup_steps"] = steps // 2
            config.get("per_dataset", {}).get("synthetic", {}).pop("warmup_steps", None)
    if raw["model"]["pretrained"] == "imagenet":
        weights = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / weights
        if not cached.is_file():
            raw["model"]["pretrained"] = "none"
            notes["pretrained"] = f"none: the ImageNet weights are not at {cached}"
    notes.setdefault("pretrained", raw["model"]["pretrained"])
    raw["sam"]["checkpoint"] = None  # m_sam is not run; its stage records "unavailable"
    return parse_params(raw), notes


def paper_preset(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """A few steps of the paper preset, trained and evaluated in this process."""
    root = args.scratch / "preset"
    params, figures = preset_params(args, root)
    use_threads(args.threads)
    figures.update(
        methods=params.grid.methods, steps=params.train.steps, image_size=params.data.image_size,
        batch_size=params.train.batch_size, layer4_stride=params.model.layer4_stride,
        bf16=computes_in_bf16(params.model.precision, device),
        loader_workers=loader_workers(params.data.loader_workers, device.type == "cuda"),
    )
    figures.update(run_inprocess(params, root, report=False))
    check_devices(params, root / "runs", device)
    figures["peak_gpu_memory_gib"] = peak_gpu_gib()
    return figures


CHECKS: dict[str, Callable[[argparse.Namespace, torch.device], dict[str, Any]]] = {
    "tiny_grid": tiny_grid, "step_time": step_time, "paper_preset": paper_preset,
}


def run_part(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One part, timed; a failure is its error line (traceback on stderr), not the end."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        result: dict[str, Any] = {"passed": True, **CHECKS[name](args, device)}
    except Exception as error:  # any failure of a part is reported and the next part runs
        traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0]
        result = {"passed": False, "error": f"{type(error).__name__}: {first}"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="cpu hides every GPU (CUDA_VISIBLE_DEVICES=), also from the jobs")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per method, and the preset's training steps")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--tiny-runner", choices=["snakemake", "inprocess"], default="snakemake")
    parser.add_argument("--tiny-methods", nargs="+", help="default: configs/tiny.yaml's")
    parser.add_argument("--tiny-domains", nargs="+", help="default: configs/tiny.yaml's")
    parser.add_argument("--preset", type=Path, default=REPO / "configs" / "paper_vlcs.yaml")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/align-gpu-check"))
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before CUDA's first use; the jobs inherit it
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU here (torch.cuda.is_available() is False)")
    args.scratch = args.scratch.resolve()
    if REPO.is_relative_to(args.scratch):
        parser.error(f"--scratch {args.scratch}: it is emptied first, and it holds this project")
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(args.scratch, ignore_errors=True)
    args.scratch.mkdir(parents=True)
    os.environ[LOCK_DIR_ENV] = str(args.scratch / "gpu-locks")  # this check's own, see above

    started = time.perf_counter()
    # Not pick_device(): its GPU lock, held by this process, would keep the tiny grid's jobs
    # waiting; the parts that compute here take it after them.
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None}
    report: dict[str, Any] = {
        "device": device_description(device), "device_type": device.type, **versions,
        "threads": args.threads, "image_size": args.image_size, "batch": args.batch,
        "steps": args.steps, "parts": {},
    }
    for name in args.parts:
        report["parts"][name] = run_part(name, args, device)
        print(f"gpu_check: {name} {'passed' if report['parts'][name]['passed'] else 'FAILED'} "
              f"in {report['parts'][name]['seconds']} s", file=sys.stderr)
    report["passed"] = all(part["passed"] for part in report["parts"].values())
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
