"""`results/index.html`: the whole report on one self-contained page, for a browser with no
network: the grid, the verdict, every table, every figure and the learning curves, and where it
all came from (git commit and when it was made, params hash).

Nothing is fetched: CSS is inline, images are `data:` URIs, there are no scripts. The tables and
the verdict are their Markdown files rendered to HTML (markdown-it, raw HTML in them escaped), so
the page says exactly what the `.md` files say. A table or figure that is missing from the report
folder is named on the page in its place, never left out silently.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from align.experiment import display_name
from align.report.curves import CURVES_DATA, metric_title

log = logging.getLogger(__name__)

PAGE = "index.html"
FIGURE_CAPTIONS = {
    "fig2": "Fig. 2: accuracy on the training domain's test split with the background outside"
            " each mask blurred (mean over seeds, 95% CI).",
    "fig4": "Fig. 4: case study: each method's Grad-CAM of the true class on a test image.",
    "fig5": "Fig. 5: masks side by side (ALIGN's masker, SAM, ground truth), each with its IoU"
            " against the ground truth and its spread.",
    "attention": "Where each map looks: the share of its mass on the object, on the shortcut"
                 " and elsewhere.",
}
STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #1d1d1f; background: #fff; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
header.page { border-bottom: 1px solid #ddd; margin-bottom: 1.5rem; }
h1 { font-size: 1.7rem; margin: 0.2rem 0 0.4rem; }
h2 { font-size: 1.35rem; margin-top: 2.2rem; border-bottom: 1px solid #eee; }
h3 { font-size: 1.12rem; margin-top: 1.6rem; }
h4 { font-size: 1rem; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f4f4f6; padding: 0 0.2em; border-radius: 3px; }
.provenance { color: #555; font-size: 0.9rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; display: block; overflow-x: auto; max-width: 100%;
  font-size: 0.85rem; margin: 0.6rem 0 1rem; }
th, td { border: 1px solid #d8d8de; padding: 0.25rem 0.5rem; text-align: left;
  vertical-align: top; }
thead th { background: #f2f2f6; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafafc; }
section.report-table, section.verdict { margin-bottom: 2rem; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9rem; margin-top: 0.3rem; }
.missing { border: 2px solid #c62828; background: #fdecea; color: #8e0000; padding: 0.6rem 1rem;
  margin: 1rem 0; }
dl.grid { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.grid dt { font-weight: 600; }
dl.grid dd { margin: 0; }
"""


@dataclass(frozen=True)
class PageInputs:
    """What the page shows besides the report folder's files."""

    dataset: str
    methods: Sequence[str]
    """`grid.methods`, in order."""
    domains: Sequence[str]
    seeds: Sequence[int]
    tables: Sequence[str]
    """The tables' file stems (`<stem>.md` in the folder), in order."""
    verdict: str
    """The verdict's Markdown file name in the folder."""
    figures: Mapping[str, str]
    """{name: path of its PNG in the folder}."""
    curves: Mapping[str, bytes]
    """{metric: PNG of its learning curves}."""
    provenance: Mapping[str, Any]
    committed: str
    """When the code's commit was made (ISO 8601, UTC): not the wall clock, so that the same
    inputs give the same page on any machine (align.provenance.commit_time)."""


def markdown_html(text: str, shift: int = 1) -> str:
    """Markdown as HTML (tables on, raw HTML escaped), headings `shift` levels lower so that a
    file's `#` title sits under the page's own title."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + shift, 6)}"
    return parser.renderer.render(tokens, parser.options, {})


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def missing(what: str, why: str) -> str:
    """A visible note in place of something the page cannot show."""
    log.warning("results page: %s missing: %s", what, why)
    return f'<div class="missing" role="alert">{escape(what)} is missing: {escape(why)}</div>'


def grid_html(inputs: PageInputs) -> str:
    methods = ", ".join(
        f"{escape(display_name(m))} (<code>{escape(m)}</code>)" for m in inputs.methods
    )
    return (
        '<dl class="grid">'
        f"<dt>Dataset</dt><dd><code>{escape(inputs.dataset)}</code></dd>"
        f'<dt>Methods</dt><dd class="methods">{methods}</dd>'
        f"<dt>Training domains</dt><dd>{escape(', '.join(inputs.domains))}</dd>"
        f"<dt>Seeds</dt><dd>{escape(', '.join(map(str, inputs.seeds)))}</dd>"
        "</dl>"
    )


def provenance_html(inputs: PageInputs) -> str:
    stamp = inputs.provenance
    return (
        f'<p class="provenance">git commit <code>{escape(str(stamp["git_commit"]))}</code>'
        f' (committed <time datetime="{escape(inputs.committed)}">{escape(inputs.committed)}'
        "</time>)"
        f' · params.yaml hash <code>{escape(str(stamp["params_hash"]))}</code></p>'
    )


def markdown_section(folder: Path, name: str, section_id: str, css: str, shift: int = 1) -> str:
    path = folder / name
    body = (markdown_html(path.read_text(encoding="utf-8"), shift) if path.is_file()
            else missing(f"{name}", f"not written to {folder}"))
    return f'<section class="{css}" id="{escape(section_id)}">{body}</section>'


def figure_html(folder: Path, name: str, relative: str) -> str:
    path = folder / relative
    caption = escape(FIGURE_CAPTIONS.get(name, name))
    if not path.is_file():
        return missing(f"Figure {name} ({relative})", f"not written to {folder}")
    return (
        f'<figure class="report-figure" id="figure-{escape(name)}">'
        f'<img src="{data_uri(path.read_bytes())}" alt="{caption}">'
        f"<figcaption>{caption} <code>{escape(relative)}</code></figcaption></figure>"
    )


def curves_html(inputs: PageInputs) -> str:
    if not inputs.curves:
        return missing("Learning curves", "no configured run has DVCLive files"
                       " (dvclive/plots/metrics/*.tsv): train the grid first")
    parts = [
        "<p>A line per run (training domain, method, seed): colour by method, line style by"
        " seed. Validation accuracy is measured every <code>train.eval_every</code> steps on the"
        " training domain's validation split; out-of-distribution accuracy is measured once per"
        " run, at its selected checkpoint, by the evaluate stage (a cross). The same numbers,"
        f" long form: <code>{CURVES_DATA}</code> (<code>dvc plots show</code>).</p>"
    ]
    for metric, png in inputs.curves.items():
        title = escape(metric_title(metric))
        parts.append(
            f'<figure class="curve" id="curve-{escape(metric)}" data-metric="{escape(metric)}">'
            f'<img src="{data_uri(png)}" alt="{title}">'
            f"<figcaption>{title} <code>{escape(metric)}</code></figcaption></figure>"
        )
    return "".join(parts)


def results_page(folder: Path, inputs: PageInputs) -> str:
    """The page, from the report files already in `folder` and `inputs`."""
    tables = "".join(
        markdown_section(folder, f"{name}.md", f"table-{name}", "report-table", shift=2)
        for name in inputs.tables
    )
    figures = "".join(figure_html(folder, name, path) for name, path in inputs.figures.items())
    title = f"ALIGN results: {inputs.dataset}"
    nav = " ".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in (
        ("verdict", "Verdict"), ("tables", "Tables"), ("figures", "Figures"),
        ("curves", "Learning curves"), ("provenance", "Provenance")))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No request may leave the page: forbid everything but inline styles and data: images.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\';'
        " style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        "<body><main>\n"
        f'<header class="page"><h1>{escape(title)}</h1>{provenance_html(inputs)}'
        f"{grid_html(inputs)}<nav>{nav}</nav></header>\n"
        + markdown_section(folder, inputs.verdict, "verdict", "verdict")
        + f'\n<section id="tables"><h2>Tables</h2>{tables}</section>\n'
        + f'<section id="figures"><h2>Figures</h2>{figures}</section>\n'
        + f'<section id="curves"><h2>Learning curves</h2>{curves_html(inputs)}</section>\n'
        + '<footer id="provenance"><h2>Provenance</h2>'
        + provenance_html(inputs)
        + "<p>Every CSV row carries the same commit and hash; <code>provenance.json</code>"
        " names the commit each evaluation record came from. Written by"
        " <code>align report</code>.</p></footer>\n"
        "</main></body></html>\n"
    )
