# The report: the paper's tables (CSV + Markdown), metrics for `dvc metrics`, and the figures, from
# every configured run's evaluations and models. It is written to results/<dataset>/ (so reports
# of several datasets stand side by side) and mirrored into results/ for the dataset of the
# parameter file, which is what `snakemake results/ood_table.csv` asks for.
from align.report import REPORT_FILES  # the one list of the report's files


rule report:
    input:
        evaluated_runs(),
        trained_runs(),
        identity=identity("report"),
        shards=str(shards_dir(PARAMS, DATASET)),
        sam=str(sam_mask_root(PARAMS, DATASET)),
    output:
        expand("results/{dataset}/{file}", dataset=DATASET, file=REPORT_FILES),
        expand("results/{file}", file=REPORT_FILES),
    threads: 8
    resources:
        gpu=1,
    log:
        job_log("report", DATASET),
    shell:
        f"{ALIGN} report --runs-root runs --results results"
