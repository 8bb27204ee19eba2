"""The pipeline's stages, each declared once, and their jobs.

A job is one run of a stage: `acquire`, `split`, `shard`, `sam_masks` and `report` per dataset,
`train` and `evaluate` per (dataset, domain, method, seed). Each stage is declared here by the
function that says what one of its jobs reads, with the files it writes for the orchestrators
(`outputs`, sealed by align/outputs.py):

- `params`: the values the job reads, after resolution (per-dataset overrides, dataset defaults,
  a method's canonical form), and no others. Knobs that change how fast a job runs but not what
  it computes (devices, loader workers, evaluation batch sizes, the checkpoint interval) are not
  part of it;
- `roots`: modules it runs beyond the stage's entry module (the dataset's or method's own file);
- `external`: the size and modification time of local files it reads from outside the pipeline
  (a dataset folder or archive, the SAM checkpoint, pretrained weights);
- `inputs`: the jobs whose outputs it reads, so a change upstream reaches it.

`align.identity` turns that into the job's identity and key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.config import Params, select
from align.data.registry import DATASETS
from align.experiment import canonical_method, configured_methods, method_source
from align.masks.layout import sam_mask_root
from align.methods.base import METHODS


@dataclass(frozen=True, order=True)
class Job:
    stage: str
    dataset: str
    domain: str | None = None
    method: str | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        """`train/<dataset>/<domain>/<method>/seed<k>` or `<stage>/<dataset>`."""
        if self.seed is not None:
            return f"{self.stage}/{self.dataset}/{self.domain}/{self.method}/seed{self.seed}"
        return f"{self.stage}/{self.dataset}"


def dataset_job(stage: str, dataset: str) -> Job:
    return Job(stage, dataset)


def run_job(stage: str, dataset: str, domain: str, method: str, seed: int) -> Job:
    return Job(stage, dataset, domain, method, int(seed))


Reads = Callable[[Params, Job], dict[str, Any]]
Outputs = Callable[[Params, Job], list[Path]]


@dataclass(frozen=True)
class Stage:
    name: str
    entry_module: str
    """The module that computes the stage's outputs: the root of its jobs' code."""
    reads: Reads
    outputs: Outputs
    """The files and folders a job writes for the orchestrators, at the pipeline's places."""
    part: str
    """Which half of the identity files holds its jobs': `data` (written before the data stages
    run) or `runs` (after them, since those jobs read the data stages' outputs)."""
    per_run: bool = False
    """One job per (domain, method, seed) of the grid; else one per dataset."""


STAGES: dict[str, Stage] = {}
"""Every stage by name, upstream first (the order `dvc repro` and `snakemake` run them in)."""


def stage(
    name: str, entry_module: str, outputs: Outputs, part: str, per_run: bool = False
) -> Callable[[Reads], Reads]:
    """Declare stage `name`: the decorated function says what its jobs read, `outputs` what they
    write."""

    def declare(reads: Reads) -> Reads:
        if name in STAGES:
            raise ValueError(f"stage {name!r} is declared twice")
        STAGES[name] = Stage(name, entry_module, reads, outputs, part, per_run)
        return reads

    return declare


# --- where each stage writes -------------------------------------------------------------------

RUNS_ROOT = Path("runs")
RESULTS_ROOT = Path("results")
"""Where the pipeline's runs and report go (`align train/evaluate --runs-root`, `align report
--results` write elsewhere, for the orchestrators' outputs are these)."""
EVAL_DIRNAME = "eval"
"""A run's evaluations, one record per target domain: inside the run's folder, but the output of
the run's `evaluate` job."""


def raw_dir(params: Params, dataset: str) -> Path:
    return params.data.root / "raw" / dataset


def split_path(params: Params, dataset: str) -> Path:
    return params.data.root / "splits" / f"{dataset}.json"


def report_path(params: Params, dataset: str) -> Path:
    """The split's report: counts per domain, class and split."""
    return params.data.root / "splits" / f"{dataset}.report.json"


def shards_dir(params: Params, dataset: str) -> Path:
    return params.data.root / "shards" / dataset


def run_dir(job: Job, runs_root: Path = RUNS_ROOT) -> Path:
    """`<runs>/<dataset>/<domain>/<method>/seed<k>/`: a trained run and, in `eval/`, its
    evaluations."""
    return runs_root / job.dataset / job.domain / job.method / f"seed{job.seed}"  # type: ignore[operator]


LOGS_ROOT = Path("logs")


def log_file(job: Job) -> Path:
    """`logs/<job name>.log`: what the job logged, kept when it fails (`align` writes it; it is
    the `log:` of the job's Snakemake rule)."""
    return LOGS_ROOT / f"{job.name}.log"


def _report_outputs(params: Params, job: Job) -> list[Path]:
    """The report's folder, and its files mirrored into results/ (all but identity.json)."""
    folder = RESULTS_ROOT / job.dataset
    files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []
    mirrored = [path.relative_to(folder) for path in files]
    return [folder, *(RESULTS_ROOT / rel for rel in mirrored if rel != Path("identity.json"))]


# --- what each stage reads ----------------------------------------------------------------


@stage("acquire", "align.data.acquire", lambda params, job: [raw_dir(params, job.dataset)],
       part="data")
def acquire_reads(params: Params, job: Job) -> dict[str, Any]:
    config = params.dataset_config(job.dataset)
    paths = {
        name: external_fingerprint(value)
        for name, value in config
        if isinstance(value, Path) and value is not None
    }
    return {
        # The data stages write under `data.root`: another root is another place to fill.
        "params": {"dataset": job.dataset, "config": select(params, f"datasets.{job.dataset}"),
                   "root": str(params.data.root)},
        "roots": [DATASETS.get(job.dataset).__module__],
        "external": paths,
        "inputs": [],
    }


@stage("split", "align.data.split",
       lambda params, job: [split_path(params, job.dataset), report_path(params, job.dataset)],
       part="data")
def split_reads(params: Params, job: Job) -> dict[str, Any]:
    return {
        "params": {"split": select(params, "data.split"), "split_seed": params.data.split_seed},
        "inputs": [dataset_job("acquire", job.dataset)],
    }


@stage("shard", "align.data.shards", lambda params, job: [shards_dir(params, job.dataset)],
       part="data")
def shard_reads(params: Params, job: Job) -> dict[str, Any]:
    keys = ("store_size", "shard_max_samples", "jpeg_quality")
    return {
        "params": {key: select(params, f"data.{key}") for key in keys},
        "inputs": [dataset_job("split", job.dataset)],
    }


@stage("sam_masks", "align.masks.sam", lambda params, job: [sam_mask_root(params, job.dataset)],
       part="data")
def sam_masks_reads(params: Params, job: Job) -> dict[str, Any]:
    sam = {k: v for k, v in select(params, "sam").items() if k not in ("device", "checkpoint")}
    return {
        # Which file holds the weights does not matter, only what it is (its fingerprint).
        "params": {**sam, "checkpoint_given": params.sam.checkpoint is not None},
        "external": {"checkpoint": external_fingerprint(params.sam.checkpoint)},
        "inputs": [dataset_job("shard", job.dataset)],
    }


@stage("train", "align.train", lambda params, job: [run_dir(job)], part="runs", per_run=True)
def train_reads(params: Params, job: Job) -> dict[str, Any]:
    name, config = canonical_method(params, job.method, job.dataset)  # type: ignore[arg-type]
    method = METHODS.get(name)
    model = {
        key: value for key, value in select(params, "model").items() if key != "masker_width"
    }
    train = select(params, "train")
    read = {
        key: train[key]
        for key in ("steps", "batch_size", "lr", "weight_decay", "lr_schedule", "eval_every")
    }
    if method.uses_masker:
        model["masker_width"] = params.model.masker_width
        read["masker_lr"] = params.train.masker_lr
    pretrained = params.model.pretrained
    inputs = [dataset_job("shard", job.dataset)]
    if method.mask_source == "sam":
        inputs.append(dataset_job("sam_masks", job.dataset))
    return {
        "params": {
            "domain": job.domain,
            "seed": job.seed,
            "method": name,
            "method_config": config,
            "model": model,
            "train": read,
            "image_size": params.data.image_size,
            "hue_jitter": params.hue_jitter(job.dataset),
        },
        "roots": [method.__module__],
        "external": {
            "pretrained": None if pretrained in ("none", "imagenet")
            else external_fingerprint(pretrained)
        },
        "inputs": inputs,
    }


@stage("evaluate", "align.evaluate", lambda params, job: [run_dir(job) / EVAL_DIRNAME],
       part="runs", per_run=True)
def evaluate_reads(params: Params, job: Job) -> dict[str, Any]:
    evaluate = select(params, "evaluate")
    return {
        "params": {
            "fractions": evaluate["fractions"],
            "fill": evaluate["fill"],
            "image_size": params.data.image_size,
        },
        "inputs": [
            run_job("train", job.dataset, job.domain, job.method, job.seed),  # type: ignore[arg-type]
            dataset_job("shard", job.dataset),
            dataset_job("sam_masks", job.dataset),
        ],
    }


@stage("report", "align.report", _report_outputs, part="runs")
def report_reads(params: Params, job: Job) -> dict[str, Any]:
    runs = [j for j in grid_jobs(params, job.dataset) if STAGES[j.stage].per_run]
    return {
        "params": {
            "grid": select(params, "grid"),
            "rows": {m: list(method_source(params, m)) for m in configured_methods(params)},
            "image_size": params.data.image_size,
        },
        "inputs": [*runs, dataset_job("shard", job.dataset), dataset_job("sam_masks", job.dataset)],
    }


PER_RUN_STAGES = tuple(name for name, declared in STAGES.items() if declared.per_run)
PARTS = {
    part: tuple(name for name, declared in STAGES.items() if declared.part == part)
    for part in ("data", "runs")
}
"""The two halves of the identity files: DVC writes the data jobs' before the data stages run and
the other jobs' after them (`align identify --part`), since those read the data stages' output."""


def grid_jobs(params: Params, dataset: str | None = None) -> list[Job]:
    """Every job `dvc repro` and `snakemake` run for the grid of `params`, upstream first."""
    dataset = dataset or params.dataset
    jobs: list[Job] = []
    for name, declared in STAGES.items():
        if not declared.per_run:
            jobs.append(dataset_job(name, dataset))
            continue
        jobs += [
            run_job(name, dataset, domain, method, seed)
            for domain in params.grid.domains or []
            for method in params.grid.methods
            for seed in params.grid.seeds
        ]
    return jobs


# --- files from outside the pipeline ------------------------------------------------------------


def external_fingerprint(path: Path | str | None) -> dict[str, Any] | None:
    """Size and modification time of a local file, or of every file under a folder (hashed), so
    that replacing a dataset folder, an archive or a checkpoint changes the jobs that read it."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if path.is_dir():
        digest = hashlib.sha256()
        count = 0
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = item.stat()
            digest.update(f"{item.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            count += 1
        return {"path": str(path), "files": count, "listing": digest.hexdigest()[:16]}
    return {"path": str(path), "missing": True}
