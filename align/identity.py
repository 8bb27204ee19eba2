"""What every job of the pipeline depends on: its identity, computed here and nowhere else.

A job is one run of a stage: `acquire`, `split`, `shard`, `sam_masks` and `report` per dataset,
`train` and `evaluate` per (dataset, domain, method, seed). Its identity holds

- `params`: the values the job reads, after resolution (per-dataset overrides, dataset defaults,
  a method's canonical form), and no others. Knobs that change how fast a job runs but not what
  it computes (devices, loader workers, evaluation batch sizes, the checkpoint interval) are not
  part of it;
- `code`: a fingerprint of the modules of `align` the job runs (the import closure of its entry
  module, the method or dataset it names included) and of the library versions;
- `external`: the size and modification time of local files it reads from outside the pipeline
  (a dataset folder or archive, the SAM checkpoint, pretrained weights);
- `inputs`: the keys of the jobs whose outputs it reads, so a change upstream reaches it.

`key` is a short hash of the identity. DVC and Snakemake decide what to rerun from it alone: `align
identify` writes one file per job under `identities/<dataset>/`, rewritten only when its content
changes, and every DVC stage depends on its job's file; every Snakemake rule carries the key as a
param. Two names for one experiment (`wo_eg` and `dre`) have one identity.

The result stores (`align.store`) key on the same identity with `inputs` replaced by a digest of
the content read (`content_identity`), so that a result computed from other data is never reused,
even when that data was changed by hand.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

import align
from align.atomic import write_text_atomically
from align.config import Params, select
from align.data.registry import DATASETS
from align.digests import file_digest
from align.errors import UserError
from align.experiment import canonical_method, configured_methods, method_source
from align.methods.base import METHODS

STAGES = ("acquire", "split", "shard", "sam_masks", "train", "evaluate", "report")
PER_RUN_STAGES = ("train", "evaluate")
IDENTITIES_ROOT = Path("identities")

PACKAGE_DIR = Path(align.__file__).parent
NOT_FOLLOWED = frozenset({
    "align.methods", "align.data.sources",
    "align.identity", "align.store", "align.provenance", "align.cli",
})
"""Modules whose imports a job's code closure does not follow: the registries, whose `__init__`
imports every entry only to register it (a job names the entry it runs instead), and the
bookkeeping that decides whether and where a job runs but not what it computes."""
LIBRARIES = (
    "torch", "torchvision", "numpy", "pillow", "webdataset", "segment-anything", "scikit-learn",
    "scipy", "matplotlib",
)
"""Libraries whose version is part of every job's code: a new release may compute differently."""
ENTRY_MODULES = {
    "acquire": "align.data.acquire",
    "split": "align.data.split",
    "shard": "align.data.shards",
    "sam_masks": "align.masks.sam",
    "train": "align.train",
    "evaluate": "align.evaluate",
    "report": "align.report",
}


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
        if self.stage in PER_RUN_STAGES:
            return f"{self.stage}/{self.dataset}/{self.domain}/{self.method}/seed{self.seed}"
        return f"{self.stage}/{self.dataset}"


def dataset_job(stage: str, dataset: str) -> Job:
    return Job(stage, dataset)


def run_job(stage: str, dataset: str, domain: str, method: str, seed: int) -> Job:
    return Job(stage, dataset, domain, method, int(seed))


def grid_jobs(params: Params, dataset: str | None = None) -> list[Job]:
    """Every job `dvc repro` and `snakemake` run for the grid of `params`, upstream first."""
    dataset = dataset or params.dataset
    jobs = [dataset_job(stage, dataset) for stage in ("acquire", "split", "shard", "sam_masks")]
    for stage in PER_RUN_STAGES:
        jobs += [
            run_job(stage, dataset, domain, method, seed)
            for domain in params.grid.domains or []
            for method in params.grid.methods
            for seed in params.grid.seeds
        ]
    return [*jobs, dataset_job("report", dataset)]


# --- code --------------------------------------------------------------------------------------


@cache
def module_file(name: str) -> Path | None:
    """The source file of module `align.x.y`, or None when there is no such module."""
    base = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def imported_modules(name: str) -> frozenset[str]:
    """The `align` modules that module `name` imports anywhere in its body (late imports too),
    with the packages that importing them runs."""
    path = module_file(name)
    if path is None:
        return frozenset()
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from align.x import y` imports module align.x.y when y is one.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = {module for module in found if module.split(".")[0] == "align"}
    packages = {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 1)}
    return frozenset(m for m in modules | packages if module_file(m) is not None)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:` (annotations only)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and ast.unparse(test).endswith("TYPE_CHECKING"):
                pending += child.orelse
                continue
            pending.append(child)


def code_closure(roots: Iterable[str]) -> list[str]:
    """The modules the `roots` run: their import closure inside `align` (see NOT_FOLLOWED)."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen or name in NOT_FOLLOWED or module_file(name) is None:
            continue
        seen.add(name)
        pending += imported_modules(name)
    return sorted(seen)


def code_fingerprint(roots: Iterable[str]) -> dict[str, str]:
    """{module or library: digest or version} for the code a job runs."""
    fingerprint = {
        module: file_digest(module_file(module))[:16]  # type: ignore[arg-type]
        for module in code_closure(roots)
    }
    fingerprint["python"] = platform.python_version()
    for library in LIBRARIES:
        try:
            fingerprint[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            fingerprint[library] = "absent"
    return fingerprint


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


# --- what each stage reads ---------------------------------------------------------------------


def _dataset_reads(params: Params, job: Job) -> dict[str, Any]:
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
        "roots": [ENTRY_MODULES["acquire"], DATASETS.get(job.dataset).__module__],
        "external": paths,
        "inputs": [],
    }


def _split_reads(params: Params, job: Job) -> dict[str, Any]:
    return {
        "params": {"split": select(params, "data.split"), "split_seed": params.data.split_seed},
        "inputs": [dataset_job("acquire", job.dataset)],
    }


def _shard_reads(params: Params, job: Job) -> dict[str, Any]:
    keys = ("store_size", "shard_max_samples", "jpeg_quality")
    return {
        "params": {key: select(params, f"data.{key}") for key in keys},
        "inputs": [dataset_job("split", job.dataset)],
    }


def _sam_reads(params: Params, job: Job) -> dict[str, Any]:
    sam = {k: v for k, v in select(params, "sam").items() if k not in ("device", "checkpoint")}
    return {
        # Which file holds the weights does not matter, only what it is (its fingerprint).
        "params": {**sam, "checkpoint_given": params.sam.checkpoint is not None},
        "external": {"checkpoint": external_fingerprint(params.sam.checkpoint)},
        "inputs": [dataset_job("shard", job.dataset)],
    }


def _train_reads(params: Params, job: Job) -> dict[str, Any]:
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
        "roots": [ENTRY_MODULES["train"], method.__module__],
        "external": {
            "pretrained": None if pretrained in ("none", "imagenet")
            else external_fingerprint(pretrained)
        },
        "inputs": inputs,
    }


def _evaluate_reads(params: Params, job: Job) -> dict[str, Any]:
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


def _report_reads(params: Params, job: Job) -> dict[str, Any]:
    runs = [j for j in grid_jobs(params, job.dataset) if j.stage in PER_RUN_STAGES]
    return {
        "params": {
            "grid": select(params, "grid"),
            "rows": {m: list(method_source(params, m)) for m in configured_methods(params)},
            "image_size": params.data.image_size,
        },
        "inputs": [*runs, dataset_job("shard", job.dataset), dataset_job("sam_masks", job.dataset)],
    }


READS = {
    "acquire": _dataset_reads,
    "split": _split_reads,
    "shard": _shard_reads,
    "sam_masks": _sam_reads,
    "train": _train_reads,
    "evaluate": _evaluate_reads,
    "report": _report_reads,
}


# --- identities --------------------------------------------------------------------------------


def key_of(identity: dict[str, Any]) -> str:
    """The short hash of an identity (its `key` field, if any, left out)."""
    body = {k: v for k, v in identity.items() if k != "key"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Identities:
    """The identities of the jobs of one parameter set, each computed once."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self._cache: dict[Job, dict[str, Any]] = {}

    def reads(self, job: Job) -> dict[str, Any]:
        """What `job` reads: `params`, `roots` (entry modules), `external`, `inputs` (jobs)."""
        if job.stage not in READS:
            raise ValueError(f"unknown stage {job.stage!r}; stages: {', '.join(STAGES)}")
        reads = READS[job.stage](self.params, job)
        reads.setdefault("roots", [ENTRY_MODULES[job.stage]])
        reads.setdefault("external", {})
        return reads

    def of(self, job: Job) -> dict[str, Any]:
        """The identity of `job`, with `key`."""
        if job not in self._cache:
            reads = self.reads(job)
            identity = {
                "stage": job.stage,
                "dataset": job.dataset,
                "params": reads["params"],
                "code": code_fingerprint(reads["roots"]),
                "external": reads["external"],
                "inputs": {upstream.name: self.key(upstream) for upstream in reads["inputs"]},
            }
            self._cache[job] = {**identity, "key": key_of(identity)}
        return self._cache[job]

    def key(self, job: Job) -> str:
        return self.of(job)["key"]

    def content_identity(self, job: Job, inputs: dict[str, str]) -> dict[str, Any]:
        """`job`'s identity with its upstream keys replaced by digests of the content it read
        (`inputs`: name -> digest), and the key of that: what a result store keys on."""
        identity = {k: v for k, v in self.of(job).items() if k not in ("key", "inputs")}
        identity["content"] = dict(sorted(inputs.items()))
        return {**identity, "key": key_of(identity)}


DATA_STAGES = ("acquire", "split", "shard", "sam_masks")
PARTS = {"data": DATA_STAGES, "runs": (*PER_RUN_STAGES, "report")}
"""The two halves of the identity files: DVC writes the data jobs' before the data stages run and
the other jobs' after them (`align identify --part`), since those read the data stages' output."""


def identity_file(job: Job, root: Path = IDENTITIES_ROOT) -> Path:
    """`<root>/<dataset>/data/<stage>.json`, `<root>/<dataset>/runs/report.json` or
    `<root>/<dataset>/runs/<stage>/<domain>/<method>/seed<k>.json`."""
    part = "data" if job.stage in DATA_STAGES else "runs"
    if job.stage in PER_RUN_STAGES:
        return root / job.dataset / part / job.stage / job.domain / job.method / (  # type: ignore[operator]
            f"seed{job.seed}.json"
        )
    return root / job.dataset / part / f"{job.stage}.json"


def write_identities(
    params: Params,
    root: Path = IDENTITIES_ROOT,
    dataset: str | None = None,
    part: str | None = None,
) -> list[Path]:
    """Write the identity file of every grid job (of one `part` of PARTS, or all), touching only
    those whose content changed, so that orchestrators comparing content or modification times
    see exactly the changed jobs. Returns the files rewritten."""
    identities = Identities(params)
    stages = PARTS[part] if part else STAGES
    changed = []
    for job in grid_jobs(params, dataset):
        if job.stage not in stages:
            continue
        path = identity_file(job, root)
        text = json.dumps(identities.of(job), indent=1, sort_keys=True) + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text_atomically(path, text)
            changed.append(path)
    return changed


def explain(params: Params, name: str) -> str:
    """Why the grid job `name` (`train/<dataset>/<domain>/<method>/seed<k>` or `<stage>/<dataset>`,
    as `dvc status` and Snakemake list them) has its key, as YAML: the parameter values it reads,
    the digest of each code file and library version it runs, the external files it reads and
    the keys of its upstream jobs. Two explanations side by side say why a job reran."""
    dataset = name.split("/")[1] if name.count("/") >= 1 else params.dataset
    jobs = {job.name: job for job in grid_jobs(params, dataset if dataset in DATASETS else None)}
    if name not in jobs:
        examples = ", ".join(sorted(jobs, key=lambda job: (job.count("/"), job))[-2:])
        raise UserError(f"{name!r} is not a job of the grid; jobs are named like {examples}")
    identity = Identities(params).of(jobs[name])
    return yaml.safe_dump({"job": name, **identity}, sort_keys=False, default_flow_style=False)


def changed_jobs(before: Params, after: Params) -> set[str]:
    """Names of the grid jobs of `after` whose key differs from `before`'s (or that are new)."""
    old, new = Identities(before), Identities(after)
    old_jobs = set(grid_jobs(before))
    return {
        job.name for job in grid_jobs(after)
        if job not in old_jobs or old.key(job) != new.key(job)
    }


def iter_leaf_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys of every leaf of a nested mapping (lists count as leaves)."""
    if isinstance(node, dict) and node:
        for name, value in node.items():
            yield from iter_leaf_keys(value, f"{prefix}{name}.")
    else:
        yield prefix.rstrip(".")
