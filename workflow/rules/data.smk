# The data stages: acquire -> split -> shard -> sam_masks. Paths match dvc.yaml (common.smk), so both
# orchestrators build the same files; `input.identity` reruns a job when its identity changes.


rule acquire:
    input:
        identity=identity("acquire"),
    output:
        directory(RAW),
    log:
        job_log("acquire"),
    shell:
        f"{ALIGN} acquire --dataset {{wildcards.dataset}}"


rule split:
    input:
        identity=identity("split"),
        raw=RAW,
    output:
        split=SPLIT,
        report=SPLIT_REPORT,
    log:
        job_log("split"),
    shell:
        f"{ALIGN} split --dataset {{wildcards.dataset}}"


rule shard:
    input:
        identity=identity("shard"),
        split=SPLIT,
    output:
        directory(SHARDS),
    log:
        job_log("shard"),
    shell:
        f"{ALIGN} shard --dataset {{wildcards.dataset}}"


rule sam_masks:
    input:
        identity=identity("sam_masks"),
        shards=SHARDS,
        split=SPLIT,
    output:
        directory(SAM_MASKS),
    threads: 8
    resources:
        gpu=1,
    log:
        job_log("sam_masks"),
    shell:
        f"{ALIGN} sam-masks --dataset {{wildcards.dataset}}"
