# Evaluation: every trained run on the test split of every domain (in- and out-of-distribution).
# A job reruns when its identity changes (its run, the test data or the `evaluate` knobs).


rule evaluate:
    input:
        identity=identity("evaluate"),
        model=MODEL,
        shards=SHARDS,
        sam=SAM_MASKS,
    output:
        directory(EVALUATIONS),
    threads: 8
    resources:
        gpu=1,
    log:
        job_log("evaluate"),
    shell:
        f"{ALIGN} evaluate --dataset {{wildcards.dataset}} --domain {{wildcards.domain}} "
        "--method {wildcards.method} --seed {wildcards.seed} --no-progress"


def evaluated_runs(dataset=DATASET):
    return expand(
        EVALUATIONS,
        dataset=dataset,
        domain=PARAMS.grid.domains,
        method=PARAMS.grid.methods,
        seed=PARAMS.grid.seeds,
    )
