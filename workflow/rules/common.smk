# Shared set-up: params.yaml is read and validated by the same code as the `align` CLI, so a bad key
# stops the workflow before any job runs. `--config params=other.yaml` selects another file.
import sys

from align.config import load_params, params_hash
from align.errors import UserError

PARAMS_FILE = config.get("params", "params.yaml")
try:
    PARAMS = load_params(PARAMS_FILE)
except UserError as error:
    sys.exit(f"snakemake: {error}")

DATASET = PARAMS.dataset
DATA = str(PARAMS.data.root)
# `{threads}` is each rule's own (`threads:`), filled in by Snakemake when the job runs.
ALIGN = f"align --params {PARAMS_FILE} --threads {{threads}}"


def hash_of(*keys):
    """Short hash of a parameter subset; a rule's `params:` carries it, so a changed knob reruns it."""
    return params_hash(PARAMS, list(keys))
