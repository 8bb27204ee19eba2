# Training: one job per (domain, method, seed) of `grid`. `input.identity` is the job's identity
# file, so it reruns exactly when the experiment changes; an identical experiment (e.g. wo_eg and
# align with lambda3 = 0, or a reverted knob) is found in runs/.store/ and only linked into place.
from align.methods.base import METHODS


def mask_inputs(wildcards):
    """SAM's masks for the methods that train toward them (m_sam), nothing for the others."""
    if METHODS.get(wildcards.method).mask_source == "sam":
        return [str(sam_mask_root(PARAMS, wildcards.dataset))]
    return []


rule train:
    input:
        identity=identity("train"),
        shards=SHARDS,
        masks=mask_inputs,
    output:
        model=MODEL,
        metrics=TRAINING_METRICS,
    threads: 8
    resources:
        gpu=1,
    log:
        job_log("train"),
    shell:
        f"{ALIGN} train --dataset {{wildcards.dataset}} --domain {{wildcards.domain}} "
        "--method {wildcards.method} --seed {wildcards.seed} --no-progress"


def trained_runs(dataset=DATASET):
    return expand(
        TRAINING_METRICS,
        dataset=dataset,
        domain=PARAMS.grid.domains,
        method=PARAMS.grid.methods,
        seed=PARAMS.grid.seeds,
    )
