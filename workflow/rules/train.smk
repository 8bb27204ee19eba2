# Training: one job per (domain, method, seed) of `grid`. A job's `params.run` is the run's identity
# hash (parameters resolved for the method, plus the training code), so it reruns exactly when the
# experiment changes; an identical experiment (e.g. wo_eg and dre) is found in runs/.store/ and
# only linked into place.
from align.methods.base import METHODS
from align.runs import RunSpec, run_identity, run_key


def run_hash(wildcards):
    spec = RunSpec(wildcards.dataset, wildcards.domain, wildcards.method, int(wildcards.seed))
    return run_key(run_identity(PARAMS, spec))


def mask_inputs(wildcards):
    """SAM's masks for the methods that train toward them (m_sam), nothing for the others."""
    if METHODS.get(wildcards.method).mask_source == "sam":
        return [f"{DATA}/masks/sam/{wildcards.dataset}"]
    return []


rule train:
    input:
        shards=f"{DATA}/shards/{{dataset}}",
        split=f"{DATA}/splits/{{dataset}}.json",
        masks=mask_inputs,
    output:
        model="runs/{dataset}/{domain}/{method}/seed{seed}/model.pt",
        metrics="runs/{dataset}/{domain}/{method}/seed{seed}/metrics.json",
    params:
        run=run_hash,
    threads: 8
    resources:
        gpu=1,
    shell:
        f"{ALIGN} train --dataset {{wildcards.dataset}} --domain {{wildcards.domain}} "
        "--method {wildcards.method} --seed {wildcards.seed} --no-progress"


def trained_runs(dataset=DATASET):
    return expand(
        "runs/{dataset}/{domain}/{method}/seed{seed}/metrics.json",
        dataset=dataset,
        domain=PARAMS.grid.domains,
        method=PARAMS.grid.methods,
        seed=PARAMS.grid.seeds,
    )
