# The data stages: acquire -> split -> shard -> sam_masks. Paths match dvc.yaml, so both
# orchestrators build the same files. A rule's `params.key` changes with the knobs it reads, which
# reruns it.


rule acquire:
    output:
        directory(f"{DATA}/raw/{{dataset}}"),
    params:
        key=lambda wildcards: hash_of(f"datasets.{wildcards.dataset}"),
    shell:
        f"{ALIGN} acquire --dataset {{wildcards.dataset}}"


rule split:
    input:
        raw=f"{DATA}/raw/{{dataset}}",
    output:
        split=f"{DATA}/splits/{{dataset}}.json",
        report=f"{DATA}/splits/{{dataset}}.report.json",
    params:
        key=hash_of("data.split", "data.split_seed"),
    shell:
        f"{ALIGN} split --dataset {{wildcards.dataset}}"


rule shard:
    input:
        split=f"{DATA}/splits/{{dataset}}.json",
        raw=f"{DATA}/raw/{{dataset}}",
    output:
        directory(f"{DATA}/shards/{{dataset}}"),
    params:
        key=hash_of("data.store_size", "data.shard_max_samples", "data.jpeg_quality"),
    shell:
        f"{ALIGN} shard --dataset {{wildcards.dataset}}"


rule sam_masks:
    input:
        shards=f"{DATA}/shards/{{dataset}}",
        split=f"{DATA}/splits/{{dataset}}.json",
    output:
        directory(f"{DATA}/masks/sam/{{dataset}}"),
    params:
        key=hash_of("sam"),
    threads: 8
    resources:
        gpu=1,
    shell:
        f"{ALIGN} sam-masks --dataset {{wildcards.dataset}}"
