"""Time of a whole run of the pipeline, by stage and by method, measured in one process.

    python bench/pipeline.py [--params params.yaml] [--scratch /tmp/align-bench] [--threads 2]
    python bench/pipeline.py --snakemake-log make-run.log

Runs acquire, split, shard and sam_masks, then train and evaluate for every (domain, method, seed)
of the grid, then the report, each timed, in a scratch folder (the workspace's data, runs and
results are neither read nor touched; the scratch folder is emptied first). Prints JSON: wall
seconds per stage; per method, train and evaluate seconds summed over domains and seeds, and the
train time as a ratio to ERM's, measured in the same run; and the total. The orchestrators' own
overhead (a process per job) is not included: compare with the measured `make run` figure.

With `--snakemake-log` it runs nothing and reads the same split from the log of a Snakemake run
(e.g. `make run > make-run.log 2>&1`): each job's seconds from its start and finish lines
(whole-second stamps), summed by rule and by method, with the jobs' wall span; jobs that ran side
by side overlap, so the sums exceed the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import shutil
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import torch

from align.config import load_params, parse_params
from align.data.acquire import acquire_dataset
from align.data.shards import write_shards
from align.data.split import write_split
from align.evaluate import evaluate_run
from align.masks.sam import write_sam_masks
from align.report import write_report
from align.runs import RunSpec
from align.train import train_run

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
STARTED = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def split_from_log(text: str) -> dict[str, object]:
    """Seconds by rule and by method (train, evaluate) from a Snakemake log, and the wall span
    from the first job's start to the last job's finish."""
    jobs: dict[str, dict[str, object]] = {}
    stamp: datetime | None = None
    current: dict[str, object] | None = None
    for line in text.splitlines():
        if found := STAMP.match(line):
            stamp = datetime.strptime(found.group(1), "%a %b %d %H:%M:%S %Y")
        elif (found := STARTED.match(line)) and stamp is not None:
            current = {"rule": found.group(1), "start": stamp, "wildcards": {}}
        elif current is not None and (found := JOBID.match(line)):
            jobs[found.group(1)] = current
        elif current is not None and (found := WILDCARDS.match(line)):
            current["wildcards"] = dict(part.split("=", 1) for part in found.group(1).split(", "))
        elif (found := FINISHED.match(line)) and found.group(1) in jobs and stamp is not None:
            jobs[found.group(1)]["end"] = stamp
    done = [job for job in jobs.values() if "end" in job]
    by_rule: dict[str, float] = defaultdict(float)
    by_method: dict[str, dict[str, float]] = defaultdict(lambda: {"train": 0.0, "evaluate": 0.0})
    for job in done:
        seconds = (job["end"] - job["start"]).total_seconds()
        by_rule[job["rule"]] += seconds
        method = job["wildcards"].get("method")
        if method and job["rule"] in ("train", "evaluate"):
            by_method[method][job["rule"]] += seconds
    wall = (max(job["end"] for job in done) - min(job["start"] for job in done)).total_seconds()
    erm = by_method.get("erm", {}).get("train")
    return {
        "jobs": len(done),
        "job_seconds_by_rule": dict(by_rule),
        "job_seconds_by_method": {m: dict(times) for m, times in by_method.items()},
        "train_time_ratio_to_erm": {
            m: round(times["train"] / erm, 2) for m, times in by_method.items()
        } if erm else None,
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/align-bench-pipeline"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--snakemake-log", type=Path, default=None,
                        help="read the split from this Snakemake log instead of running")
    args = parser.parse_args()
    if args.snakemake_log is not None:
        print(json.dumps(split_from_log(args.snakemake_log.read_text()), indent=2))
        return
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    shutil.rmtree(args.scratch, ignore_errors=True)
    raw = load_params(args.params).model_dump(mode="json")
    raw["data"]["root"] = str(args.scratch / "data")
    params = parse_params(raw)
    runs, results = args.scratch / "runs", args.scratch / "results"
    dataset = params.dataset

    stages: dict[str, float] = {}
    by_method: dict[str, dict[str, float]] = defaultdict(lambda: {"train": 0.0, "evaluate": 0.0})

    def timed(label: str, work, *arguments, **keywords) -> float:
        started = time.perf_counter()
        work(*arguments, **keywords)
        seconds = time.perf_counter() - started
        stages[label] = stages.get(label, 0.0) + seconds
        return seconds

    total_start = time.perf_counter()
    timed("acquire", acquire_dataset, params, dataset)
    timed("split", write_split, params, dataset)
    timed("shard", write_shards, params, dataset)
    timed("sam_masks", write_sam_masks, params, dataset)
    specs = [
        RunSpec(dataset, domain, method, seed)
        for domain in params.grid.domains or []
        for method in params.grid.methods
        for seed in params.grid.seeds
    ]
    for spec in specs:
        by_method[spec.method]["train"] += timed(
            "train", train_run, params, spec, runs, show_progress=False
        )
    for spec in specs:
        by_method[spec.method]["evaluate"] += timed(
            "evaluate", evaluate_run, params, spec, runs, show_progress=False
        )
    timed("report", write_report, params, runs, results)
    total = time.perf_counter() - total_start

    erm = by_method.get("erm", {}).get("train")
    print(json.dumps({
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "grid": {"methods": params.grid.methods, "domains": params.grid.domains,
                 "seeds": params.grid.seeds, "steps": params.train.steps},
        "seconds_by_stage": {k: round(v, 1) for k, v in stages.items()},
        "seconds_by_method": {
            m: {k: round(v, 1) for k, v in times.items()} for m, times in by_method.items()
        },
        "train_time_ratio_to_erm": {
            m: round(times["train"] / erm, 2) for m, times in by_method.items()
        } if erm else None,
        "total_seconds": round(total, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
