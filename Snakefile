# Snakemake entry point: it only includes the rule files and names the default target.
# `snakemake -c2` builds everything for the dataset in params.yaml; any file can be a target.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        trained_runs(),
        evaluated_runs(),
        "results/ood_table.csv",
        str(sam_mask_root(PARAMS, DATASET)),
