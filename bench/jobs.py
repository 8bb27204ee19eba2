"""Two one-thread jobs at a time against one two-thread job at a time, on the same training runs.

    python bench/jobs.py [--params params.yaml] [--methods erm align] [--seeds 0 1]
                         [--steps 100] [--scratch /tmp/align-bench-jobs]

`dvc repro` runs one stage at a time, so each training job gets both cores (`--threads 2`);
`snakemake -c2` can run two jobs with one thread each. This bench trains the same runs (every
method x seed) both ways through the `align train` command the orchestrators call, each job its own
process as there, from data prepared once in a scratch folder (the workspace is not touched).
Prints JSON: the wall seconds of each way and the speed-up of two one-thread jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from align.config import load_params, parse_params
from align.data.acquire import acquire_dataset
from align.data.shards import write_shards
from align.data.split import write_split


def train_all(workspace: Path, runs: list[tuple[str, int]], threads: int, parallel: int,
              domain: str) -> float:
    """Wall seconds to train every (method, seed) with `parallel` jobs of `threads` threads."""
    shutil.rmtree(workspace / "runs", ignore_errors=True)
    command = [sys.executable, "-m", "align.cli", "--params", "params.yaml", "--threads",
               str(threads), "train", "--domain", domain, "--no-progress"]

    def job(run: tuple[str, int]) -> None:
        method, seed = run
        subprocess.run([*command, "--method", method, "--seed", str(seed)], cwd=workspace,
                       check=True, capture_output=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(job, runs))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--methods", nargs="+", default=["erm", "align"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/align-bench-jobs"))
    args = parser.parse_args()
    shutil.rmtree(args.scratch, ignore_errors=True)
    args.scratch.mkdir(parents=True)
    raw = load_params(args.params).model_dump(mode="json")
    raw["data"]["root"] = str(args.scratch / "data")
    raw["train"]["steps"] = args.steps
    raw["grid"].update(methods=args.methods, seeds=args.seeds)
    raw["train"]["eval_every"] = min(raw["train"]["eval_every"], args.steps)
    raw["train"]["checkpoint_every"] = min(raw["train"]["checkpoint_every"], args.steps)
    params = parse_params(raw)
    (args.scratch / "params.yaml").write_text(yaml.safe_dump(raw))
    dataset = params.dataset
    acquire_dataset(params, dataset)
    write_split(params, dataset)
    write_shards(params, dataset)
    domain = (params.grid.domains or [])[0]
    runs = [(method, seed) for method in args.methods for seed in args.seeds]
    one_job = train_all(args.scratch, runs, threads=2, parallel=1, domain=domain)
    two_jobs = train_all(args.scratch, runs, threads=1, parallel=2, domain=domain)
    print(json.dumps({
        "cpus": len(os.sched_getaffinity(0)),
        "runs": [f"{method} seed {seed}" for method, seed in runs], "steps": args.steps,
        "one_two_thread_job_at_a_time_seconds": round(one_job, 1),
        "two_one_thread_jobs_at_a_time_seconds": round(two_jobs, 1),
        "two_jobs_speedup": round(one_job / two_jobs, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
