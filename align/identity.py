"""What every job of the pipeline depends on: its identity, computed here and nowhere else.

A job's identity holds what its stage says it reads (align/stages.py: the parameters after
resolution, files from outside the pipeline, upstream jobs), made comparable:

- `params` and `external` as the stage gives them;
- `code`: a fingerprint of the modules of `align` the job runs (the import closure of its stage's
  entry module, the method or dataset it names included) and of the library versions;
- `inputs`: the keys of the jobs whose outputs it reads, so a change upstream reaches it.

`key` is a short hash of the identity. DVC and Snakemake decide what to rerun from it alone: one
file per job under `identities/<dataset>/`, rewritten only when its content changes, is a
dependency of its DVC stage (written by `align identify`) and an input of its Snakemake rule
(written when Snakemake starts). Two names for one experiment (`wo_eg` and `dre`) have one
identity.

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
from functools import cache
from pathlib import Path
from typing import Any

import yaml

import align
from align.atomic import write_text_atomically
from align.config import Params
from align.data.registry import DATASETS
from align.digests import file_digest
from align.errors import UserError
from align.stages import PARTS, STAGES, Job, grid_jobs

IDENTITIES_ROOT = Path("identities")

PACKAGE_DIR = Path(align.__file__).parent
NOT_FOLLOWED = frozenset({
    "align.methods", "align.data.sources",
    "align.identity", "align.stages", "align.store", "align.provenance", "align.cli",
})
"""Modules whose imports a job's code closure does not follow: the registries, whose `__init__`
imports every entry only to register it (a job names the entry it runs instead), and the
bookkeeping that decides whether and where a job runs but not what it computes."""
LIBRARIES = (
    "torch", "torchvision", "numpy", "pillow", "webdataset", "segment-anything", "scikit-learn",
    "scipy", "matplotlib",
)
"""Libraries whose version is part of every job's code: a new release may compute differently."""


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
        """What `job` reads (align/stages.py): `params`, `roots` (the modules it runs, its stage's
        entry module first), `external`, `inputs` (jobs)."""
        if job.stage not in STAGES:
            raise ValueError(f"unknown stage {job.stage!r}; stages: {', '.join(STAGES)}")
        declared = STAGES[job.stage]
        reads = declared.reads(self.params, job)
        reads["roots"] = [declared.entry_module, *reads.get("roots", [])]
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

    def write(self, job: Job, root: Path = IDENTITIES_ROOT) -> bool:
        """Write `job`'s identity file if its content changed (so that orchestrators comparing
        content or modification times see exactly the changed jobs); True if it was written."""
        path = identity_file(job, root)
        text = json.dumps(self.of(job), indent=1, sort_keys=True) + "\n"
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return False
        write_text_atomically(path, text)
        return True

    def content_identity(self, job: Job, inputs: dict[str, str]) -> dict[str, Any]:
        """`job`'s identity with its upstream keys replaced by digests of the content it read
        (`inputs`: name -> digest), and the key of that: what a result store keys on."""
        identity = {k: v for k, v in self.of(job).items() if k not in ("key", "inputs")}
        identity["content"] = dict(sorted(inputs.items()))
        return {**identity, "key": key_of(identity)}




def identity_file(job: Job, root: Path = IDENTITIES_ROOT) -> Path:
    """`<root>/<dataset>/data/<stage>.json`, `<root>/<dataset>/runs/report.json` or
    `<root>/<dataset>/runs/<stage>/<domain>/<method>/seed<k>.json`."""
    part = STAGES[job.stage].part
    if STAGES[job.stage].per_run:
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
    stages = PARTS[part] if part else tuple(STAGES)
    jobs = [job for job in grid_jobs(params, dataset) if job.stage in stages]
    return [identity_file(job, root) for job in jobs if identities.write(job, root)]


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
