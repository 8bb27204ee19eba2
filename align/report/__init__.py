"""Stage `report`: the paper's tables and figures from the evaluate stage's JSONs.

Writes under `results/`:
- `id_table`, `ablation_table`, `ood_table`, `mask_quality`, `attention` as `.csv` (a row per
  cell: the mean over seeds, the ends of its 95% t interval, n, or why seeds are missing) and
  `.md` (cells
  `mean ± h (n=k)`, best values in bold, reasons as notes, the checkpoint step each run selected);
- `verdict.md`, `verdict.csv`: the positive control, and ALIGN against each other configured
  method over trained models: paired differences with a bootstrap interval, t-test p-values
  (Holm-adjusted per metric), a Wilcoxon p-value and one sentence each (`align.report.verdict`);
- `measurements.csv`: every number of every eval record in long form, a row per (run, target
  domain, metric), e.g. `mask_quality.gradcam.iou` (`align.report.collect.measurements`);
- `metrics.json`: the headline only (mean accuracies per method, ALIGN's paired OOD
  differences and the positive control, keyed by method id) for `dvc metrics show/diff` and
  `dvc exp show`, whose rows already name the commit or experiment; every other number is in
  the CSVs;
- `fig2.csv`: Fig. 2's bars in long form for `dvc plots`;
- `figures/fig2_mask_quality.png`, `figures/fig4_case_study.png`, `figures/fig5_mask_gallery.png`,
  `figures/attention.png` (where each map looks: object, shortcut, elsewhere);
- `curves.csv`: every run's DVCLive learning curves in long form, and its OOD accuracy at the
  selected step, for `dvc plots` (`align.report.curves`);
- `index.html`: all of the above on one self-contained page (`align.report.page`);
- `provenance.json`: the git commit and params hash, the files written, and the commit and hash
  each eval record came from.

Provenance: every CSV row carries `git_commit` and `params_hash` columns (the files stay plain
CSV), each Markdown file ends with a line naming both, `provenance.json` holds them, and each
PNG has them in its footer and as PNG text chunks.

Every file is written under a temporary name and renamed when complete. `provenance.json` is
removed first and written last, so a report with a `provenance.json` is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from align.atomic import atomic_path, write_json_atomically, write_text_atomically
from align.config import Params
from align.data.shards import shards_dir
from align.device import pick_device
from align.digests import content_digest, file_digest
from align.errors import UserError
from align.identity import Identities
from align.masks.layout import status_file
from align.provenance import commit_time, provenance
from align.report.collect import collect_evaluations, measurements_csv
from align.report.curves import (
    CURVES_DATA,
    configured_runs,
    curve_files,
    curve_pngs,
    curves_csv,
    read_curves,
)
from align.report.figures import (
    attention_figure,
    blur_bars,
    blur_bars_csv,
    blur_figure,
    case_study_figure,
    mask_gallery_figure,
    save_figure,
)
from align.report.masker_blur import add_masker_blur
from align.report.page import PAGE, PageInputs, results_page
from align.report.table_files import to_csv, to_markdown
from align.report.tables import TABLE_BUILDERS
from align.report.verdict import comparisons
from align.report.verdict_files import headline
from align.report.verdict_files import to_csv as verdict_csv
from align.report.verdict_files import to_markdown as verdict_markdown
from align.runs import EVAL_DIRNAME, domain_shard_files
from align.stages import dataset_job
from align.store import Store, manifest_of, materialize

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
METRICS_FILE = "metrics.json"
VERDICT = "verdict"
MEASUREMENTS = "measurements.csv"
FIG2_DATA = "fig2.csv"
STORE_DIRNAME = ".store"
FIGURES = {
    "fig2": "figures/fig2_mask_quality.png",
    "fig4": "figures/fig4_case_study.png",
    "fig5": "figures/fig5_mask_gallery.png",
    "attention": "figures/attention.png",
}


TABLE_NAMES = ("id_table", "ablation_table", "ood_table", "mask_quality", "attention")
"""The `name` of each table of `TABLE_BUILDERS`, in order."""
REPORT_FILES = (
    *(f"{table}.{extension}" for table in TABLE_NAMES for extension in ("csv", "md")),
    f"{VERDICT}.md",
    f"{VERDICT}.csv",
    MEASUREMENTS,
    METRICS_FILE,
    FIG2_DATA,
    *FIGURES.values(),
    CURVES_DATA,
    PAGE,
    PROVENANCE_FILE,
)
"""Every file of a report, in `results/<dataset>/` and mirrored into `results/`: the one list.
workflow/rules/report.smk reads it, tests/test_report.py checks dvc.yaml's report stage against
it, and `build_report` checks that it wrote exactly these."""


def write_report(
    params: Params, runs_root: Path = Path("runs"), results_dir: Path = Path("results")
) -> list[Path]:
    """Write the report of `params.dataset` into `<results>/<dataset>/` and mirror it into
    `<results>/` (the files the pipeline's targets name); returns the files under `<results>/`.

    The report is stored by its identity (`align.store`) under `<results>/.store/`: a report of
    the same runs, evaluations and settings (e.g. after a knob is reverted) is linked again, not
    drawn again.
    """
    results_dir = Path(results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise UserError(f"--results {results_dir}: a file, not a folder; give a folder (it is "
                        "created when missing)")
    identity = report_identity(params, Path(runs_root))
    key = identity["key"]

    def build(staging: Path) -> None:
        build_report(params, Path(runs_root), staging)
        write_json_atomically(staging / "identity.json", identity, indent=2)

    entry = Store(results_dir / STORE_DIRNAME).build(key, build)
    materialize(entry, results_dir / params.dataset)
    return mirror(entry, results_dir)


def mirror(entry: Path, results_dir: Path) -> list[Path]:
    """Copy a stored report's files into `results_dir`, `provenance.json` removed first and
    written last, so a mirror with a `provenance.json` is complete."""
    (results_dir / PROVENANCE_FILE).unlink(missing_ok=True)
    names = sorted(manifest_of(entry), key=lambda name: name == PROVENANCE_FILE)
    written = []
    for name in names:
        if name == "identity.json":
            continue
        target = results_dir / name
        with atomic_path(target) as partial:
            shutil.copyfile(entry / name, partial)
        written.append(target)
    return written


def report_identity(params: Params, runs_root: Path) -> dict[str, Any]:
    """The content identity of the report job (with `key`): its job identity with the upstream
    jobs replaced by the files it reads: each configured run's `identity.json` (which names the
    stored model), its eval records and its DVCLive curves, and the test shards and SAM masks its
    figures use."""
    dataset = params.dataset
    read: dict[str, str] = {}
    for _, run_dir in configured_runs(params, runs_root):
        for path in [run_dir / "identity.json", *sorted((run_dir / EVAL_DIRNAME).glob("*.json")),
                     *curve_files(run_dir)]:
            read[path.relative_to(runs_root).as_posix()] = (
                file_digest(path) if path.is_file() else "missing"
            )
    shards = [
        path for domain in params.grid.domains or []
        for path in domain_shard_files(shards_dir(params, dataset), domain, ("test",))
    ]
    sam = status_file(params, dataset)
    content = {
        "runs": content_digest_of(read),
        "shards": content_digest(shards),
        "sam_masks": file_digest(sam) if sam.is_file() else "missing",
    }
    return Identities(params).content_identity(dataset_job("report", dataset), content)


def content_digest_of(files: dict[str, str]) -> str:
    """One digest of a {name: digest} listing."""
    listing = "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def build_report(params: Params, runs_root: Path, folder: Path) -> list[Path]:
    """Write every table, figure and metrics file of the report into `folder`."""
    stamp = provenance(params)
    evaluations = collect_evaluations(params, Path(runs_root))
    add_masker_blur(evaluations)
    written: list[Path] = []

    tables = {}
    for build in TABLE_BUILDERS:
        table = build(evaluations)
        tables[table.name] = table
        written.append(write_text_atomically(folder / f"{table.name}.csv",
                                             to_csv(table, stamp)))
        written.append(write_text_atomically(folder / f"{table.name}.md",
                                             to_markdown(table, stamp)))
    found = comparisons(evaluations)
    written.append(write_text_atomically(folder / f"{VERDICT}.md",
                                         verdict_markdown(evaluations, found, stamp)))
    written.append(write_text_atomically(folder / f"{VERDICT}.csv",
                                         verdict_csv(found, stamp)))
    written.append(write_text_atomically(folder / MEASUREMENTS,
                                         measurements_csv(evaluations, stamp)))
    written.append(write_text_atomically(folder / METRICS_FILE,
                                         json.dumps(headline(evaluations, found), indent=2) + "\n"))

    bars = blur_bars(evaluations)
    written.append(write_text_atomically(folder / FIG2_DATA, blur_bars_csv(bars, stamp)))
    device = pick_device()
    figures = {
        "fig2": lambda: blur_figure(evaluations, bars, stamp),
        "fig4": lambda: case_study_figure(evaluations, stamp, device),
        "fig5": lambda: mask_gallery_figure(evaluations, stamp, device),
        "attention": lambda: attention_figure(tables["attention"], stamp),
    }
    for name, draw in figures.items():
        written.append(save_figure(draw(), folder / FIGURES[name], stamp))

    curves = read_curves(params, Path(runs_root), evaluations)
    written.append(write_text_atomically(folder / CURVES_DATA, curves_csv(curves, stamp)))
    page = PageInputs(
        dataset=params.dataset, methods=list(params.grid.methods),
        domains=evaluations.train_domains, seeds=evaluations.seeds, tables=TABLE_NAMES,
        verdict=f"{VERDICT}.md", figures=FIGURES,
        curves=curve_pngs(curves, list(params.grid.methods), stamp), provenance=stamp,
        committed=commit_time(),
    )
    written.append(write_text_atomically(folder / PAGE, results_page(folder, page)))

    document = {
        **stamp,
        "dataset": params.dataset,
        "runs_root": str(runs_root),
        "outputs": [str(path.relative_to(folder)) for path in written],
        "inputs": evaluations.input_provenance(),
    }
    written.append(write_text_atomically(folder / PROVENANCE_FILE,
                                         json.dumps(document, indent=2) + "\n"))
    names = [path.relative_to(folder).as_posix() for path in written]
    if sorted(names) != sorted(REPORT_FILES):  # a new output must be declared for DVC/Snakemake
        raise RuntimeError(f"the report wrote {sorted(names)}, REPORT_FILES lists"
                           f" {sorted(REPORT_FILES)}: update REPORT_FILES and dvc.yaml")
    log.info("report: %d files", len(written))
    return written


__all__ = ["write_report"]
