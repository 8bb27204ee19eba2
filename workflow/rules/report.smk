# The report: the paper's tables (CSV + Markdown), metrics for `dvc metrics`, and the figures, from
# every configured run's evaluations and models.
REPORT_TABLES = ["id_table", "ablation_table", "ood_table", "mask_quality"]
REPORT_FIGURES = ["fig2_mask_quality", "fig4_case_study", "fig5_mask_gallery"]


rule report:
    input:
        evaluated_runs(),
        trained_runs(),
        shards=f"{DATA}/shards/{DATASET}",
        sam=f"{DATA}/masks/sam/{DATASET}",
    output:
        expand("results/{table}.{ext}", table=REPORT_TABLES, ext=["csv", "md"]),
        "results/metrics.json",
        "results/fig2.csv",
        "results/provenance.json",
        expand("results/figures/{figure}.png", figure=REPORT_FIGURES),
    params:
        key=hash_of("dataset", "grid", "methods", "evaluate", "data.image_size"),
    threads: 8
    resources:
        gpu=1,
    shell:
        f"{ALIGN} report --runs-root runs --results results"
