"""One truth for what each job depends on: for every leaf key of the parameters (generated from the
params schema, so a new key is covered without editing this file) and for an edit in each area of
the code, the jobs DVC would rerun (`dvc status`), the jobs Snakemake would rerun (a dry run with
every rerun trigger) and the jobs the identity function says are affected are the same set.

The project is copied into a temporary folder with a tiny configuration, run once for real as
`make run` runs it (workflow/run: Snakemake, then `dvc commit` records the same outputs for DVC),
so every probe is a change after `make run`, and probed in one subprocess
(`tests/parity_probe.py`) against the copy's own `align` package, so code edits never touch the
repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY_SYNTHETIC, make_params

from align.config import parse_params
from align.dvc_cache import md5_of
from align.errors import UserError
from align.identity import iter_leaf_keys

REPO = Path(__file__).resolve().parents[1]
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"
"""A PATH without the project's environment: a shell before `source .venv/bin/activate`."""
PROJECT_FILES = (
    "align", "dvc.yaml", "Snakefile", "workflow", ".dvcignore", "requirements.lock",
)
CODE_AREAS = {
    "acquire: a dataset source": "align/data/sources/synthetic.py",
    "split": "align/data/split.py",
    "shard": "align/data/shards.py",
    "sam masks": "align/masks/sam.py",
    "a method": "align/methods/align.py",
    "the shared training loop": "align/train.py",
    "the models": "align/models/classifier.py",
    "grad-cam": "align/explain/grad_cam.py",
    "metrics": "align/metrics/faithfulness.py",
    "evaluate": "align/evaluate.py",
    "report": "align/report/tables.py",
    "bookkeeping (identity, store)": "align/store.py",
}
"""An area of the code -> a file in it that the probe edits (an appended comment)."""

CANDIDATES: tuple[Any, ...] = (
    0.1, 1, "x", "mean", "blur", "cuda", "center_point", "vit_l", "imagenet", "vlcs", "shape",
    "background",
    "fp32", "cosine", "https://example.org/other.tar.gz", ["stripes", "rings"], ["circle", "bars"],
    ["gradient", "noise"], ["a"],
    {"vlcs": {}},
)
"""Values tried, in order, for a leaf whose own kind of change (a flipped bool, a nudged number)
is not valid; a leaf for which none is valid fails the test, naming it."""
COMPANIONS = {"dataset": ("grid.domains",)}
"""Keys that cannot change alone: another dataset needs its own domains, listed in full (dvc.yaml
builds its matrix from them), as the parameters resolve them when left unset."""


def tiny_params() -> dict[str, Any]:
    raw = make_params(Path("data"), **TINY_SYNTHETIC).model_dump(mode="json")
    raw["grid"] = {"methods": ["erm", "align"], "domains": ["gradient"], "seeds": [0]}
    return raw


def set_key(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(raw))
    *parents, leaf = key.split(".")
    node = changed
    for part in parents:
        node = node[part]
    node[leaf] = value
    return changed


def get_key(raw: dict[str, Any], key: str) -> Any:
    node = raw
    for part in key.split("."):
        node = node[part]
    return node


def is_valid(raw: dict[str, Any]) -> bool:
    try:
        parse_params(raw)
    except UserError:
        return False
    return True


def nudges(value: Any) -> list[Any]:
    """The natural changes of a value of this kind."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2]
    if isinstance(value, float):
        return [value * 0.5, value + 0.1, value - 0.1, 0.1] if value else [0.1, 0.5]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [[*value, max(value) + 1]]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [value[:-1], [*value, "x"], list(reversed(value))]
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return [value[:-1], [v / 2 for v in value]]
    return []


def changed_params(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A valid parameter set differing from `raw` at `key` (and, for values that must sum up, at
    one sibling), or None."""
    value = get_key(raw, key)
    for candidate in [*nudges(value), *CANDIDATES]:
        if candidate == value:
            continue
        changed = set_key(raw, key, candidate)
        for companion in COMPANIONS.get(key, ()):
            unset = set_key(changed, companion, None)
            if is_valid(unset):
                resolved = parse_params(unset).model_dump(mode="json")
                changed = set_key(changed, companion, get_key(resolved, companion))
        if is_valid(changed):
            return changed
    parent, _, _ = key.rpartition(".")
    siblings = get_key(raw, parent) if parent else {}
    if isinstance(value, float) and isinstance(siblings, dict):
        for sibling, other in siblings.items():  # e.g. split ratios that must sum to one
            if sibling != key.rsplit(".", 1)[-1] and isinstance(other, float):
                changed = set_key(set_key(raw, key, value + 0.1), f"{parent}.{sibling}",
                                  other - 0.1)
                if is_valid(changed):
                    return changed
    return None


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def copy_project(root: Path) -> Path:
    """The project's pipeline files copied into `root`, with the tiny grid's params.yaml."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the project with the tiny grid, run once, in sync for both orchestrators."""
    root = copy_project(tmp_path_factory.mktemp("parity"))
    bin_dir = Path(sys.executable).parent
    # A checkout has its .venv, and nothing is activated: DVC's stages find `align` there
    # (workflow/align), Snakemake's jobs run the interpreter running Snakemake.
    (root / ".venv").symlink_to(bin_dir.parent, target_is_directory=True)
    assert shutil.which("align", path=BARE_PATH) is None, "an `align` outside the project's venv"
    env = {**os.environ, "PATH": BARE_PATH, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("VIRTUAL_ENV", None)
    run([str(bin_dir / "dvc"), "init", "--no-scm", "-q"], root, env)
    # The committed DVC settings (cache types, the default remote), without git.
    (root / ".dvc" / "config").write_text((REPO / ".dvc" / "config").read_text())
    run([str(bin_dir / "dvc"), "config", "core.no_scm", "true"], root, env)
    # As `make run` builds it (with the environment on PATH, as make puts it there).
    run(["workflow/run"], root, {**env, "PATH": f"{bin_dir}:{BARE_PATH}", "JOBS": "2"})
    return root, env


def probe(project: tuple[Path, dict[str, str]], changes: list[dict[str, str]]) -> list[dict]:
    root, env = project
    changes_file = root / "changes.json"
    changes_file.write_text(json.dumps(changes))
    output = run([sys.executable, str(REPO / "tests" / "parity_probe.py"), str(changes_file)],
                 root, env)
    return json.loads(output.strip().splitlines()[-1])


def test_a_finished_run_is_up_to_date_for_both_orchestrators(project):
    (result,) = probe(project, [{"name": "nothing"}])
    assert result == {"change": "nothing", "identity": [], "dvc": [], "snakemake": []}
    # Nothing listed at all: before, the identify stages were always "changed".
    root, env = project
    said = run([str(Path(sys.executable).parent / "dvc"), "status"], root, env)
    assert said.strip() == "Data and pipelines are up to date.", said


def test_dvc_metrics_show_only_the_headline(project):
    # `dvc metrics show` and `dvc exp show` had every run's metrics.json and every table's means:
    # 8 lines of up to 6,400 characters, and ~240 metric columns. Now one file, a few figures.
    root, env = project
    said = json.loads(run([str(Path(sys.executable).parent / "dvc"), "metrics", "show",
                           "--json"], root, env))
    (files,) = [revision["data"] for revision in said.values()]
    assert list(files) == ["results/metrics.json"]
    headline = files["results/metrics.json"]["data"]
    methods = tiny_params()["grid"]["methods"]
    assert set(headline) == {"ood_accuracy", "id_accuracy", "align_vs", "positive_control"}
    assert set(headline["ood_accuracy"]) == set(headline["id_accuracy"]) == set(methods)
    assert set(headline["align_vs"]) == set(methods) - {"align"}
    # At most: 2 per method, 4 per comparison with ALIGN, 6 for the control.
    def leaves(node: Any) -> int:
        return sum(map(leaves, node.values())) if isinstance(node, dict) else 1

    assert leaves(headline) <= 2 * len(methods) + 4 * (len(methods) - 1) + 6, headline


def test_every_knob_and_code_area_reruns_the_same_jobs_everywhere(project):
    raw = tiny_params()
    changes, invalid = [], []
    for key in iter_leaf_keys(raw):
        changed = changed_params(raw, key)
        if changed is None:
            invalid.append(key)
            continue
        changes.append({"name": key, "params": yaml.safe_dump(changed, sort_keys=False)})
    assert not invalid, f"no valid change found for {invalid}: extend CANDIDATES"
    changes += [{"name": area, "code": path} for area, path in CODE_AREAS.items()]
    results = probe(project, changes)
    mismatched = [r for r in results if not r["identity"] == r["dvc"] == r["snakemake"]]
    assert not mismatched, json.dumps(mismatched, indent=1)
    by_name = {r["change"]: set(r["identity"]) for r in results}

    # The rows of the issue that found the disagreements.
    assert by_name["train.checkpoint_every"] == set()
    assert by_name["sam.device"] == set()
    assert by_name["data.loader_workers"] == set()
    masker_only = {
        "train/synthetic/gradient/align/seed0", "evaluate/synthetic/gradient/align/seed0",
        "report/synthetic",
    }
    assert by_name["model.masker_width"] == masker_only
    assert by_name["train.masker_lr"] == masker_only
    assert by_name["methods.irm.penalty_weight"] == set()  # irm is not in the grid
    assert by_name["metrics"] == {"evaluate/synthetic/gradient/erm/seed0",
                                  "evaluate/synthetic/gradient/align/seed0", "report/synthetic"}
    assert by_name["report"] == {"report/synthetic"}
    assert by_name["bookkeeping (identity, store)"] == set()
    assert "shard/synthetic" in by_name["split"] and "acquire/synthetic" not in by_name["split"]
    assert by_name["sam masks"] == {"sam_masks/synthetic", "evaluate/synthetic/gradient/erm/seed0",
                                    "evaluate/synthetic/gradient/align/seed0", "report/synthetic"}


def test_reverting_a_knob_restores_the_earlier_results_without_recomputing(project):
    # It leaves the copy on the original parameters with outputs rewritten, in sync for Snakemake
    # (the tests after it use Snakemake alone), not for DVC.
    root, env = project
    bin_dir = Path(sys.executable).parent
    dvc, snakemake = [str(bin_dir / "dvc"), "repro"], [str(bin_dir / "snakemake"), "-c1", "all"]
    params_file = root / "params.yaml"
    original = params_file.read_text()
    table = root / "results" / "ood_table.csv"
    record = root / "runs" / "synthetic" / "gradient" / "align" / "seed0" / "eval" / "noise.json"
    before = table.read_bytes(), record.read_bytes()
    changed = set_key(yaml.safe_load(original), "evaluate.fill", "mean")

    for command in (dvc, snakemake):
        params_file.write_text(yaml.safe_dump(changed, sort_keys=False))
        run(command, root, env)
        assert record.read_bytes() != before[1]  # the change was computed
        params_file.write_text(original)
        output = run(command, root, env)
        assert (table.read_bytes(), record.read_bytes()) == before
        if command is dvc:
            # Every stage of the change comes back from DVC's run cache; only the two identify
            # stages (always run, cheap) execute.
            ran = {line for line in output.splitlines() if line.startswith("Running stage")}
            assert ran == {"Running stage 'identify_data':", "Running stage 'identify_runs':"}
            assert "evaluate@gradient-align-0" in output and "skipping run" in output
    # Snakemake reruns the jobs (their params changed back), and each finds its stored result.
    stored = root / "runs" / ".store" / "evaluate"
    assert len([p for p in stored.iterdir() if not p.name.startswith(".")]) == 4


# Outputs changed by hand after their job wrote them: Snakemake, which compares times and its own
# records rather than content, rebuilds them and what was made from them (align/outputs.py). DVC
# compares content itself. Each case ran into "Nothing to be done" (or a failed evaluation) before.
ERM_RUN = Path("runs/synthetic/gradient/erm/seed0")


def snakemake_for(project: tuple[Path, dict[str, str]], *arguments: str) -> str:
    """Run Snakemake in the project; returns what it said on stderr (the damage lines)."""
    root, env = project
    result = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-c1", *arguments],
                            cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_a_truncated_model_is_trained_again(project):
    root, _ = project
    model = root / ERM_RUN / "model.pt"
    size = model.stat().st_size
    # As a user would: the stored copy behind the link is read-only, so it is replaced.
    truncated = model.read_bytes()[: size // 2]
    model.unlink()
    model.write_bytes(truncated)
    said = snakemake_for(project, str(ERM_RUN / "eval"), "--quiet", "all")
    assert f"train/synthetic/gradient/erm/seed0: {ERM_RUN}/model.pt was changed" in said
    assert model.stat().st_size == size
    assert (root / ERM_RUN / "eval" / "noise.json").is_file()


def test_a_hand_edited_shard_is_rebuilt_and_the_rest_found_in_the_store(project):
    root, _ = project
    shard = sorted((root / "data" / "shards" / "synthetic").rglob("*.tar"))[0]
    original = shard.read_bytes()
    shard.unlink()  # an editor writes a new file
    shard.write_bytes(original[: len(original) // 2] + bytes(len(original) - len(original) // 2))
    model_inode = (root / ERM_RUN / "model.pt").stat().st_ino
    said = snakemake_for(project, "results/ood_table.csv", "--quiet", "all")
    assert "shard/synthetic: " in said and "was changed" in said
    assert shard.read_bytes() == original
    # The same shards again: the run is linked from the store, not trained again.
    assert (root / ERM_RUN / "model.pt").stat().st_ino == model_inode


def test_deleted_evaluations_are_rebuilt_but_not_while_another_snakemake_works_here(project):
    root, _ = project
    shutil.rmtree(root / ERM_RUN / "eval")
    table = root / "results" / "ood_table.csv"
    # While another Snakemake works here its jobs' outputs may be half replaced: nothing is
    # removed (the table, made from the evaluations, stays).
    locks = root / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.output.lock").write_text(str(root / ERM_RUN / "eval"))
    try:
        said = snakemake_for(project, "-n", "results/ood_table.csv")
    finally:
        (locks / "0.output.lock").unlink()
    assert "another Snakemake holds this folder's locks" in said and table.is_file()
    said = snakemake_for(project, "results/ood_table.csv", "--quiet", "all")
    assert f"evaluate/synthetic/gradient/erm/seed0: {ERM_RUN}/eval/gradient.json is missing" in said
    assert (root / ERM_RUN / "eval" / "noise.json").is_file() and table.is_file()
    assert "Nothing to be done" in snakemake_for(project, "-n", "all")


def test_outputs_snakemake_rebuilt_are_up_to_date_for_dvc_and_a_change_is_seen(project):
    # The tests above rebuilt a model, a shard and evaluations with Snakemake alone: DVC, which
    # compares content, finds them as it recorded them, and sees a change made after.
    root, env = project
    bin_dir = Path(sys.executable).parent
    status = [str(bin_dir / "dvc"), "status", "--json"]
    assert json.loads(run(status, root, env)) == {}
    params_file = root / "params.yaml"
    original = params_file.read_text()
    changed = set_key(yaml.safe_load(original), "methods.align.lambda3", 0.3)
    with identities_kept(root):
        params_file.write_text(yaml.safe_dump(changed, sort_keys=False))
        try:
            run([sys.executable, "-m", "align.cli", "identify"], root, env)
            listed = set(json.loads(run(status, root, env)))
        finally:
            params_file.write_text(original)
    assert listed == {"identify_data", "identify_runs", "train@gradient-align-0",
                      "evaluate@gradient-align-0", "report"}


@contextlib.contextmanager
def identities_kept(root: Path) -> Iterator[None]:
    """Restores the identity files (contents and modification times) the block rewrote."""
    kept = {path: (path.read_bytes(), path.stat().st_mtime_ns)
            for path in (root / "identities").rglob("*.json")}
    try:
        yield
    finally:
        for path, (content, mtime_ns) in kept.items():
            path.write_bytes(content)
            os.utime(path, ns=(mtime_ns, mtime_ns))


def dry_run_jobs(said: str) -> set[str]:
    """The jobs a `snakemake -n` listed, named as the identities name them."""
    jobs, rule = set(), None
    for line in said.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            if rule == "report":  # the one rule without wildcards
                jobs.add("report/synthetic")
        elif line.strip().startswith("wildcards:") and rule not in (None, "all"):
            wildcards = dict(item.strip().split("=") for item in line.split(":", 1)[1].split(","))
            if "seed" in wildcards:
                wildcards["seed"] = f"seed{wildcards['seed']}"
            names = ("dataset", "domain", "method", "seed")
            jobs.add("/".join([rule, *(wildcards[n] for n in names if n in wildcards)]))
            rule = None
    return jobs


def test_a_change_after_dvc_built_the_outputs_is_seen_by_snakemake(project):
    # `dvc repro` leaves outputs without Snakemake's records (.snakemake/metadata), which its
    # params trigger needs: before, this dry run said "Nothing to be done".
    root, _ = project
    shutil.rmtree(root / ".snakemake" / "metadata", ignore_errors=True)
    params_file = root / "params.yaml"
    original = params_file.read_text()
    changed = set_key(yaml.safe_load(original), "methods.align.lambda3", 0.3)
    with identities_kept(root):
        params_file.write_text(yaml.safe_dump(changed, sort_keys=False))
        try:
            said = snakemake_for(project, "-n", "all")
        finally:
            params_file.write_text(original)
    assert dry_run_jobs(said) == {"train/synthetic/gradient/align/seed0",
                                  "evaluate/synthetic/gradient/align/seed0", "report/synthetic"}
    assert "Nothing to be done" in snakemake_for(project, "-n", "all")


def test_each_model_is_one_file_on_disk_for_the_store_the_workspace_and_dvc(project):
    # Every model was on disk twice after `make run` (the store's file, linked into the workspace,
    # and DVC's copy in its cache), three times after `dvc repro`. Now the store's file is DVC's
    # cache object, and the workspace's name a link to it.
    root, env = project
    # As `make run` leaves it (every output present again, as a test above may have removed one;
    # DVC's commit; Snakemake's times restored after it, as the tests after this one expect).
    bin_dir = Path(sys.executable).parent
    run(["workflow/run"], root, {**env, "PATH": f"{bin_dir}:{BARE_PATH}", "JOBS": "1"})
    models = sorted((root / "runs").glob("synthetic/*/*/seed*/model.pt"))
    assert models
    inodes = set()
    for model in models:
        key = json.loads((model.parent / "identity.json").read_text())["key"]
        stored = root / "runs" / ".store" / key / "model.pt"
        md5 = md5_of(stored)
        cached = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        assert model.is_symlink()
        assert model.stat().st_ino == stored.stat().st_ino == cached.stat().st_ino, model
        assert not os.access(stored, os.W_OK) or os.geteuid() == 0  # sealed
        inodes.add(stored.stat().st_ino)
    # No other copy of a model anywhere in the project (a model is the only file of its size).
    sizes = {model.stat().st_size for model in models}
    files = [Path(folder, name) for folder, _, names in os.walk(root) for name in names]
    copies = {path.stat().st_ino for path in files
              if not path.is_symlink() and path.stat().st_size in sizes}
    assert copies == inodes


def test_dvc_yaml_names_the_paths_align_writes():
    # Snakemake's rules take every path from the stages' declared outputs (align/stages.py,
    # workflow/rules/common.smk); dvc.yaml cannot, so its paths are checked against the same
    # declarations, with DVC's variables in place of the names.
    from align.models.trained import BEST_MODEL
    from align.runs import TRAINING_METRICS_FILE
    from align.stages import STAGES, Job

    params = make_params(Path("${data.root}"))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def declared(stage: str) -> list[str]:
        names = ("${item.domain}", "${item.method}", "${item.seed}")
        job = Job(stage, "${dataset}", *(names if STAGES[stage].per_run else ()))  # type: ignore[arg-type]
        return [str(path) for path in STAGES[stage].outputs(params, job)]

    def paths(stage: str, key: str) -> list[str]:
        return [next(iter(entry)) if isinstance(entry, dict) else entry
                for entry in stages[stage].get(key, [])]

    ((raw,), (split, split_report), (shards,), (masks,), (run,)) = (
        declared(stage) for stage in ("acquire", "split", "shard", "sam_masks", "train")
    )
    assert paths("acquire", "outs") == [raw]
    assert paths("split", "outs") == [split, split_report]
    assert raw in paths("split", "deps") and split in paths("shard", "deps")
    assert paths("shard", "outs") == [shards] and shards in paths("sam_masks", "deps")
    assert paths("sam_masks", "outs") == [masks]
    computed_from = ["params.yaml", "align", "requirements.lock"]
    assert paths("identify_data", "deps") == computed_from
    assert paths("identify_runs", "deps") == [*computed_from, shards, masks]
    assert paths("train", "outs") == [f"{run}/{BEST_MODEL}", f"{run}/identity.json",
                                      f"{run}/{TRAINING_METRICS_FILE}"]
    # Only the report's headline is a DVC metric (a run's metrics.json made ~70 columns).
    assert "metrics" not in stages["train"]
    assert paths("evaluate", "outs") == declared("evaluate")
    assert f"{run}/{BEST_MODEL}" in paths("evaluate", "deps")


# Sharing: what `make run` built reaches a colleague through DVC's default remote (a folder beside
# the project, .dvc/config) and a git clone, and nothing is trained there.
GIT = ("git", "-c", "user.name=test", "-c", "user.email=test@example.org")
TRACKED_DVC_FILES = (".dvc/config", ".dvc/.gitignore", ".dvc/plots")
"""What git holds of the repository's .dvc/ folder (plots: the templates of dvc.yaml's plots)."""


@pytest.mark.slow
def test_a_clone_pulls_every_result_from_the_default_remote_and_trains_nothing(
    project, tmp_path_factory
):
    root, env = project
    dvc = str(Path(sys.executable).parent / "dvc")
    # Every target present again (a test above may have left one removed), as DVC recorded it.
    snakemake_for(project, "all")
    assert json.loads(run([dvc, "status", "--json"], root, env)) == {}
    models = sorted((root / "runs").glob("synthetic/*/*/seed*/model.pt"))
    run([dvc, "push", "--quiet"], root, env)
    assert (root.parent / "align-dvc-remote" / "files" / "md5").is_dir()

    # What git holds after `make run` (dvc.lock included), committed and cloned beside it.
    origin = tmp_path_factory.mktemp("origin")
    for name in [*PROJECT_FILES, "params.yaml", "dvc.lock", ".gitignore", *TRACKED_DVC_FILES]:
        source = REPO / name if name in (".gitignore", *TRACKED_DVC_FILES) else root / name
        if source.is_dir():
            shutil.copytree(source, origin / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            (origin / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, origin / name)
    run([*GIT, "init", "--quiet"], origin, env)
    run([*GIT, "add", "--all"], origin, env)
    run([*GIT, "commit", "--quiet", "--message", "the tiny grid, built"], origin, env)
    clone = tmp_path_factory.mktemp("clone")
    run([*GIT, "clone", "--quiet", str(origin), str(clone)], clone.parent, env)
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    clone_env = {**env, "PYTHONPATH": str(clone)}

    run([dvc, "pull", "--quiet"], clone, clone_env)
    # Only the identities are computed (they are not stored: each clone computes its own); every
    # other stage, training included, finds its outputs as pulled.
    said = run([dvc, "repro"], clone, clone_env)
    ran = {line for line in said.splitlines() if line.startswith("Running stage")}
    assert ran == {"Running stage 'identify_data':", "Running stage 'identify_runs':"}, said
    assert run([dvc, "status"], clone, clone_env).strip() == "Data and pipelines are up to date."
    results = sorted(path.relative_to(root) for path in (root / "results").rglob("*")
                     if path.is_file() and ".store" not in path.parts)
    assert results and all((clone / path).read_bytes() == (root / path).read_bytes()
                           for path in results)
    assert all((clone / model.relative_to(root)).read_bytes() == model.read_bytes()
               for model in models)
    # A pulled model is on disk once there too: in the clone's cache, linked into its workspace.
    assert all((clone / model.relative_to(root)).resolve().is_relative_to(clone / ".dvc" / "cache")
               for model in models)
