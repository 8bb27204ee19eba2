"""Where a training run lives, and its identity: the hash that decides whether it must be trained.

A run is trained once into `<runs>/.store/<key>/`, with `key` a hash of everything that can change
its result (its parameters, resolved for the dataset, and the training code); the named folder
`<runs>/<dataset>/<domain>/<method>/seed<k>/` that DVC and Snakemake see is a hard-linked copy.
Two names for the same experiment (`wo_eg` and `align` with lambda3 = 0) share one key, and a
reverted parameter finds its finished run again, as DomainBed's sweep folders with a `done` marker
do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import align
from align.config import Params, select
from align.methods.base import METHODS, resolve_config

RUNS_ROOT = Path("runs")
DONE = "done"
TRAINING_CODE = (
    "models", "explain", "methods", "train.py", "runs.py", "data/loader.py", "data/transforms.py",
)
"""Parts of the package whose change changes a trained model (so invalidates stored runs)."""


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    domain: str
    method: str
    seed: int

    def named_dir(self, runs_root: Path = RUNS_ROOT) -> Path:
        return runs_root / self.dataset / self.domain / self.method / f"seed{self.seed}"


def code_fingerprint() -> str:
    package = Path(align.__file__).parent
    digest = hashlib.sha256()
    for part in TRAINING_CODE:
        for path in sorted((package / part).rglob("*.py")) if (package / part).is_dir() else [
            package / part
        ]:
            if path.exists():
                digest.update(path.relative_to(package).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_identity(params: Params, spec: RunSpec) -> dict[str, Any]:
    """Everything that determines the trained model, with the method in its canonical form."""
    method_name, method_config = canonical_method(params, spec)
    identity = {
        "dataset": spec.dataset,
        "dataset_config": select(params, f"datasets.{spec.dataset}"),
        "domain": spec.domain,
        "method": method_name,
        "method_config": method_config,
        "seed": spec.seed,
        "model": select(params, "model"),
        # How often a checkpoint is written does not change the result.
        "train": {k: v for k, v in select(params, "train").items() if k != "checkpoint_every"},
        "data": {key: select(params, f"data.{key}") for key in (
            "store_size", "image_size", "split", "split_seed", "jpeg_quality",
        )},
        "hue_jitter": params.hue_jitter(spec.dataset),
        "code": code_fingerprint(),
    }
    if METHODS.get(method_name).mask_source == "sam":
        # The targets are SAM's masks: another SAM setting is another experiment.
        identity["sam"] = {k: v for k, v in select(params, "sam").items() if k != "device"}
    return identity


def canonical_method(params: Params, spec: RunSpec) -> tuple[str, dict[str, Any]]:
    """(name, resolved config) of the experiment a method name stands for on this dataset."""
    method = METHODS.get(spec.method)
    config = resolve_config(spec.method, select(params, f"methods.{spec.method}"), spec.dataset)
    return method.canonical(spec.method, config)


def run_key(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def store_dir(runs_root: Path, key: str) -> Path:
    return runs_root / ".store" / key


def is_done(directory: Path) -> bool:
    return (directory / DONE).is_file()


def materialize(store: Path, named: Path, skip: tuple[str, ...] = ("checkpoint.pt",)) -> None:
    """Replace `named` by hard links (copies across file systems) of a finished stored run."""
    staging = named.with_name(f".{named.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for source in store.rglob("*"):
        if source.is_dir() or source.name in skip:
            continue
        target = staging / source.relative_to(store)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    shutil.rmtree(named, ignore_errors=True)
    staging.rename(named)
