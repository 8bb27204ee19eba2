"""Run inside a copy of the project (cwd, with the copy's `align` first on PYTHONPATH): for each
change listed in the JSON file argv[1], the jobs that the identities, `dvc status` and a Snakemake
dry run say must rerun. Prints one JSON list of {"change", "identity", "dvc", "snakemake"}.

A change is {"name", "params": a params.yaml text} or {"name", "code": a file to edit}; the probe
applies it, asks the three, and restores the project before the next one. Everything runs in this
one process (DVC's and Snakemake's Python APIs), so a hundred changes take minutes, not an hour.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from dvc.repo import Repo
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    OutputSettings,
    ResourceSettings,
    StorageSettings,
)
from snakemake_interface_logger_plugins.common import LogEvent

from align.config import load_params
from align.identity import Identities, grid_jobs, write_identities

PARAMS = Path("params.yaml")
IDENTITIES = Path("identities")


def identity_keys() -> dict[str, str]:
    params = load_params(PARAMS)
    identities = Identities(params)
    return {job.name: identities.key(job) for job in grid_jobs(params)}


def dvc_reruns() -> set[str]:
    """The jobs `dvc status` reports as changed, after `align identify` wrote the identities."""
    params = load_params(PARAMS)
    dataset = params.dataset
    write_identities(params, IDENTITIES)
    with Repo(".") as repo:
        status = repo.status()
    jobs = set()
    for stage in status:
        name = stage.split(":")[-1]
        if name.startswith("identify_"):
            continue
        stage_name, _, item = name.partition("@")
        if item:
            domain, method, seed = item.rsplit("-", 2)
            jobs.add(f"{stage_name}/{dataset}/{domain}/{method}/seed{seed}")
        else:
            jobs.add(f"{stage_name}/{dataset}")
    return jobs


class JobCollector(logging.Handler):
    """Collects the jobs a Snakemake dry run lists."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[tuple[str, dict[str, str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == LogEvent.JOB_INFO:
            self.jobs.append((record.rule_name, dict(record.wildcards or {})))


def snakemake_reruns() -> set[str]:
    """The jobs a Snakemake dry run (every rerun trigger on) would run."""
    collector = JobCollector()
    snakemake_logger = logging.getLogger("snakemake.logging")
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(),
            storage_settings=StorageSettings(),
            snakefile=Path("Snakefile"),
            workdir=Path.cwd(),
        )
        # Snakemake sets up its logging when the workflow is made: only then can a handler stay.
        snakemake_logger.addHandler(collector)
        try:
            workflow.dag(DAGSettings()).execute_workflow(executor="dryrun")
        finally:
            snakemake_logger.removeHandler(collector)
    jobs = set()
    for rule, wildcards in collector.jobs:
        if rule == "all":
            continue
        if "domain" in wildcards:
            jobs.add(f"{rule}/{wildcards['dataset']}/{wildcards['domain']}/"
                     f"{wildcards['method']}/seed{wildcards['seed']}")
        else:
            jobs.add(f"{rule}/{wildcards.get('dataset', load_params(PARAMS).dataset)}")
    return jobs


def main(changes_file: str) -> None:
    changes = json.loads(Path(changes_file).read_text())
    baseline_params = PARAMS.read_text()
    baseline = identity_keys()
    kept = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in identity_files()}
    results = []
    for change in changes:
        edited = Path(change["code"]) if "code" in change else None
        original = edited.read_text() if edited else None
        try:
            if edited is not None:
                edited.write_text(original + "\n# an edit that changes nothing but the code\n")
            if "params" in change:
                PARAMS.write_text(change["params"])
            keys = identity_keys()
            identity = {name for name, key in keys.items() if baseline.get(name) != key}
            results.append({
                "change": change["name"],
                "identity": sorted(identity),
                "dvc": sorted(dvc_reruns()),
                "snakemake": sorted(snakemake_reruns()),
            })
        finally:
            PARAMS.write_text(baseline_params)
            if edited is not None:
                edited.write_text(original)
            restore_identities(kept)
    print(json.dumps(results))


def identity_files() -> list[Path]:
    """The jobs' identity files (not the seals beside them)."""
    return [*IDENTITIES.glob("*/data/**/*.json"), *IDENTITIES.glob("*/runs/**/*.json")]


def restore_identities(kept: dict[Path, tuple[bytes, int]]) -> None:
    """The identity files as they were, modification times included: Snakemake compares them
    with its outputs' (a content written back later would be newer than the outputs)."""
    for path in identity_files():
        if path not in kept:
            path.unlink()
    for path, (content, mtime_ns) in kept.items():
        if path.read_bytes() != content:
            path.write_bytes(content)
        os.utime(path, ns=(mtime_ns, mtime_ns))


if __name__ == "__main__":
    main(sys.argv[1])
