"""Stage `report`: the paper's tables and figures from the evaluate stage's JSONs.

Writes under `results/`:
- `id_table`, `ablation_table`, `ood_table`, `mask_quality` as `.csv` (cells `mean ± h (n=k)`, h
  the half-width of the 95% t interval over seeds, or why they are missing) and `.md` (best values
  in bold, reasons as notes, the checkpoint step each run selected);
- `verdict.md`, `verdict.csv`: ALIGN against each other configured method, paired differences
  with a bootstrap interval, a Wilcoxon p-value and one sentence each (`align.report.verdict`);
- `metrics.json`: {table: {row: {column: mean}}} and `headline` (mean accuracies per method and
  ALIGN's paired OOD differences) for `dvc metrics show/diff` and `dvc exp show`;
- `fig2.csv`: Fig. 2's bars in long form for `dvc plots`;
- `figures/fig2_mask_quality.png`, `figures/fig4_case_study.png`, `figures/fig5_mask_gallery.png`;
- `provenance.json`: the git commit and params hash, the files written, and the commit and hash
  each eval record came from.

Provenance: every CSV row carries `git_commit` and `params_hash` columns (the files stay plain
CSV), each Markdown file ends with a line naming both, `metrics.json` holds them under
`provenance`, and each PNG has them in its footer and as PNG text chunks.

Every file is written under a temporary name and renamed when complete. `provenance.json` is
removed first and written last, so a report with a `provenance.json` is complete.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from align.atomic import write_text_atomically
from align.config import Params
from align.device import pick_device
from align.provenance import provenance
from align.report.collect import collect_evaluations
from align.report.figures import (
    blur_bars,
    blur_bars_csv,
    blur_figure,
    case_study_figure,
    mask_gallery_figure,
    save_figure,
)
from align.report.tables import TABLE_BUILDERS, table_metrics, to_csv, to_markdown
from align.report.verdict import comparisons, headline
from align.report.verdict import to_csv as verdict_csv
from align.report.verdict import to_markdown as verdict_markdown

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
METRICS_FILE = "metrics.json"
VERDICT = "verdict"
FIG2_DATA = "fig2.csv"
FIGURES = {
    "fig2": "figures/fig2_mask_quality.png",
    "fig4": "figures/fig4_case_study.png",
    "fig5": "figures/fig5_mask_gallery.png",
}


def write_report(
    params: Params, runs_root: Path = Path("runs"), results_dir: Path = Path("results")
) -> list[Path]:
    """Write every table, figure and metrics file of the report; returns the paths written."""
    results_dir = Path(results_dir)
    (results_dir / PROVENANCE_FILE).unlink(missing_ok=True)
    stamp = provenance(params)
    evaluations = collect_evaluations(params, Path(runs_root))
    written: list[Path] = []

    metrics: dict[str, object] = {}
    for build in TABLE_BUILDERS:
        table = build(evaluations)
        written.append(write_text_atomically(results_dir / f"{table.name}.csv",
                                             to_csv(table, stamp)))
        written.append(write_text_atomically(results_dir / f"{table.name}.md",
                                             to_markdown(table, stamp)))
        metrics[table.name] = table_metrics(table)
    found = comparisons(evaluations)
    written.append(write_text_atomically(results_dir / f"{VERDICT}.md",
                                         verdict_markdown(evaluations, found, stamp)))
    written.append(write_text_atomically(results_dir / f"{VERDICT}.csv",
                                         verdict_csv(found, stamp)))
    metrics["headline"] = headline(evaluations, found)
    metrics["provenance"] = stamp
    written.append(write_text_atomically(results_dir / METRICS_FILE,
                                         json.dumps(metrics, indent=2) + "\n"))

    bars = blur_bars(evaluations)
    written.append(write_text_atomically(results_dir / FIG2_DATA, blur_bars_csv(bars, stamp)))
    device = pick_device()
    figures = {
        "fig2": lambda: blur_figure(evaluations, bars, stamp),
        "fig4": lambda: case_study_figure(evaluations, stamp, device),
        "fig5": lambda: mask_gallery_figure(evaluations, stamp, device),
    }
    for name, draw in figures.items():
        written.append(save_figure(draw(), results_dir / FIGURES[name], stamp))

    document = {
        **stamp,
        "dataset": params.dataset,
        "runs_root": str(runs_root),
        "outputs": [str(path.relative_to(results_dir)) for path in written],
        "inputs": evaluations.input_provenance(),
    }
    written.append(write_text_atomically(results_dir / PROVENANCE_FILE,
                                         json.dumps(document, indent=2) + "\n"))
    log.info("report: %d files under %s", len(written), results_dir)
    return written


__all__ = ["write_report"]
