# The data stages: acquire -> split -> shard -> sam_masks. Paths match dvc.yaml (common.smk), so both
# orchestrators build the same files; `params.identity` reruns a job when its identity changes.


rule acquire:
    output:
        directory(RAW),
    params:
        identity=identity_key("acquire"),
    shell:
        f"{ALIGN} acquire --dataset {{wildcards.dataset}}"


rule split:
    input:
        raw=RAW,
    output:
        split=SPLIT,
        report=SPLIT_REPORT,
    params:
        identity=identity_key("split"),
    shell:
        f"{ALIGN} split --dataset {{wildcards.dataset}}"


rule shard:
    input:
        split=SPLIT,
    output:
        directory(SHARDS),
    params:
        identity=identity_key("shard"),
    shell:
        f"{ALIGN} shard --dataset {{wildcards.dataset}}"


rule sam_masks:
    input:
        shards=SHARDS,
        split=SPLIT,
    output:
        directory(SAM_MASKS),
    params:
        identity=identity_key("sam_masks"),
    threads: 8
    resources:
        gpu=1,
    shell:
        f"{ALIGN} sam-masks --dataset {{wildcards.dataset}}"
