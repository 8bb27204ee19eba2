# The data stages: acquire -> split -> shard -> sam_masks. Paths match dvc.yaml, so both
# orchestrators build the same files; `params.identity` reruns a job when its identity changes.


rule acquire:
    output:
        directory(f"{DATA}/raw/{{dataset}}"),
    params:
        identity=identity_key("acquire"),
    shell:
        f"{ALIGN} acquire --dataset {{wildcards.dataset}}"


rule split:
    input:
        raw=f"{DATA}/raw/{{dataset}}",
    output:
        split=f"{DATA}/splits/{{dataset}}.json",
        report=f"{DATA}/splits/{{dataset}}.report.json",
    params:
        identity=identity_key("split"),
    shell:
        f"{ALIGN} split --dataset {{wildcards.dataset}}"


rule shard:
    input:
        split=f"{DATA}/splits/{{dataset}}.json",
    output:
        directory(f"{DATA}/shards/{{dataset}}"),
    params:
        identity=identity_key("shard"),
    shell:
        f"{ALIGN} shard --dataset {{wildcards.dataset}}"


rule sam_masks:
    input:
        shards=f"{DATA}/shards/{{dataset}}",
        split=f"{DATA}/splits/{{dataset}}.json",
    output:
        directory(f"{DATA}/masks/sam/{{dataset}}"),
    params:
        identity=identity_key("sam_masks"),
    threads: 8
    resources:
        gpu=1,
    shell:
        f"{ALIGN} sam-masks --dataset {{wildcards.dataset}}"
