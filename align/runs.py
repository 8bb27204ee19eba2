"""Where a training run lives, and the identity its stored result is keyed by.

A run is trained once into the store `<runs>/.store/<key>/` (`align.store`), with `key` the
content identity of its train job (`align.identity`): the parameters it reads, resolved for the
dataset and in the method's canonical form, the code it runs, and a digest of the shards it reads.
The named folder `<runs>/<dataset>/<domain>/<method>/seed<k>/` that DVC and Snakemake see holds
links to it. Two names for the same experiment (`wo_eg` and `align` with lambda3 = 0) share
one key, a reverted parameter finds its finished run again, and a run trained on other data is
never found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.config import Params
from align.data.shards import INDEX_NAME, shards_dir
from align.digests import content_digest
from align.identity import Identities
from align.masks.layout import sam_mask_root, status_file
from align.methods.base import METHODS
from align.stages import EVAL_DIRNAME, RUNS_ROOT, Job, run_dir, run_job

STORE_DIRNAME = ".store"


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    domain: str
    method: str
    seed: int

    def named_dir(self, runs_root: Path = RUNS_ROOT) -> Path:
        # Not through self.job(): the fields may be wildcards ("{seed}") naming a path pattern.
        return run_dir(Job("train", self.dataset, self.domain, self.method, self.seed), runs_root)

    def job(self, stage: str = "train") -> Job:
        return run_job(stage, self.dataset, self.domain, self.method, self.seed)


TRAINING_METRICS_FILE = "metrics.json"
"""What the train stage writes into each run folder beside the model: the selected step and the
validation curve."""


def eval_path(run_dir: Path, target_domain: str) -> Path:
    return run_dir / EVAL_DIRNAME / f"{target_domain}.json"


def store_root(runs_root: Path, stage: str = "train") -> Path:
    """`<runs>/.store/` for trained runs, `<runs>/.store/evaluate/` for their evaluations."""
    root = Path(runs_root) / STORE_DIRNAME
    return root if stage == "train" else root / stage


def store_dir(runs_root: Path, key: str) -> Path:
    return store_root(runs_root) / key


def domain_shard_files(root: Path, domain: str, splits: tuple[str, ...]) -> list[Path]:
    """The index of one domain of a shard tree and the shards of `splits` it lists (the files a
    job reads); only the index when it is missing or unreadable (the reader will say so)."""
    index_file = root / domain / INDEX_NAME
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [index_file] if index_file.is_file() else []
    listed = [
        root / domain / shard["name"]
        for split in splits
        for shard in index["splits"].get(split, {}).get("shards", [])
    ]
    return [index_file, *(path for path in listed if path.is_file())]


def run_identity(params: Params, spec: RunSpec) -> dict[str, Any]:
    """The content identity of `spec`'s training (with `key`): its job identity with the upstream
    jobs replaced by the digest of the train and val shards of its domain (and SAM's masks of
    them for a method trained toward those)."""
    identities = Identities(params)
    identity = identities.of(spec.job())
    splits = ("train", "val")
    content = {"shards": content_digest(
        domain_shard_files(shards_dir(params, spec.dataset), spec.domain, splits)
    )}
    if METHODS.get(identity["params"]["method"]).mask_source == "sam":
        masks = sam_mask_root(params, spec.dataset)
        files = [status_file(params, spec.dataset)]
        files += domain_shard_files(masks, spec.domain, splits)
        content["sam_masks"] = content_digest(path for path in files if path.is_file())
    return identities.content_identity(spec.job(), content)


def run_key(identity: dict[str, Any]) -> str:
    return identity["key"]
