# Shared set-up: params.yaml is read and validated by the same code as the `align` CLI, so a bad key
# stops the workflow before any job runs. `--config params=other.yaml` selects another file.
#
# What a job depends on is decided in one place, align/identity.py: each rule's input `identity` is its
# job's identity file (the parameters it reads after resolution, the code it runs and its upstream
# jobs' keys), the file DVC's stage depends on, so Snakemake reruns a job exactly when DVC does.
# The other inputs only order jobs.
# What a job left is sealed by the job itself (align/outputs.py) and checked below.
import shlex
import sys
from pathlib import Path

from align.config import load_params
from align.errors import UserError
from align.identity import Identities, identity_file
from align.masks.layout import sam_mask_root
from align.models.trained import BEST_MODEL
from align.outputs import remove_damaged
from align.runs import TRAINING_METRICS_FILE
from align.stages import STAGES, Job, dataset_job, log_file, run_job, shards_dir

PARAMS_FILE = config.get("params", "params.yaml")
# Every job reads its parameters from that file, so an override that only Snakemake sees would
# change nothing (`--config grid=...` used to end in "Nothing to be done"): refused in one line.
ignored = sorted(set(config) - {"params"})
if ignored:
    sys.exit(
        f"snakemake: --config {ignored[0]}=... is not read: every job reads {PARAMS_FILE}. Edit"
        f" it, or pass a copy with the change as --config params=<file> (`dvc exp run -S"
        f" {ignored[0]}=...` for an experiment)"
    )
try:
    PARAMS = load_params(PARAMS_FILE)
except UserError as error:
    sys.exit(f"snakemake: {error}")

# An output changed by hand since its job wrote it (a truncated model, an edited shard, deleted
# evaluations) is invisible to Snakemake's times and records: it and what was made from it are
# removed now (stored copies stay), so this run, or dry run, rebuilds exactly those.
# Not while another Snakemake works here (its locks): its jobs' outputs are being written.
if workflow.is_main_process:
    if any(Path(".snakemake", "locks").glob("*.lock")):
        print("snakemake: another Snakemake holds this folder's locks: outputs changed by hand"
              " are not looked for", file=sys.stderr)
    else:
        for line in remove_damaged(PARAMS):
            print(f"snakemake: {line}", file=sys.stderr)

DATASET = PARAMS.dataset


def wildcard_job(stage, dataset="{dataset}"):
    """A job of `stage` with Snakemake's wildcards in place of its names."""
    per_run = STAGES[stage].per_run
    return Job(stage, dataset, *(("{domain}", "{method}", "{seed}") if per_run else ()))


def declared_outputs(stage):
    """What `stage` declares its jobs write (align/stages.py), with Snakemake's wildcards in place
    of the names; tests/test_parity.py checks dvc.yaml's paths against the same declarations."""
    return [str(path) for path in STAGES[stage].outputs(PARAMS, wildcard_job(stage))]


def job_log(stage, dataset="{dataset}"):
    """The log file `align` writes for a job of `stage` (align/stages.py: log_file)."""
    return str(log_file(wildcard_job(stage, dataset)))


(RAW,) = declared_outputs("acquire")
SPLIT, SPLIT_REPORT = declared_outputs("split")
(SHARDS,) = declared_outputs("shard")
(SAM_MASKS,) = declared_outputs("sam_masks")
(RUN,) = declared_outputs("train")
(EVALUATIONS,) = declared_outputs("evaluate")
MODEL = f"{RUN}/{BEST_MODEL}"
TRAINING_METRICS = f"{RUN}/{TRAINING_METRICS_FILE}"
# Jobs run `align` with the interpreter running Snakemake, which has just imported it: no
# activated environment is needed. `{threads}` is each rule's own (`threads:`), filled in by
# Snakemake when the job runs.
ALIGN = f"{shlex.quote(sys.executable)} -m align.cli --params {PARAMS_FILE} --threads {{threads}}"
IDENTITIES = Identities(PARAMS)


def identity(stage):
    """An input function: the identity file of the rule's job (align/identity.py), written first
    when its content changed. A job reruns when its identity changes, whoever built its outputs
    (DVC, Snakemake or `make run`): the file is then newer than they are, and Snakemake's own
    records, which only it writes, are not needed."""

    def path(wildcards):
        if "domain" in wildcards.keys():
            job = run_job(stage, wildcards.dataset, wildcards.domain, wildcards.method,
                          int(wildcards.seed))
        else:
            job = dataset_job(stage, wildcards.get("dataset", DATASET))
        IDENTITIES.write(job)
        return str(identity_file(job))

    return path
