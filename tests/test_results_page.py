"""`results/index.html`: built from the report's own files, self-contained, and rendered by a real
headless Chromium (the distribution's package, never a downloaded browser); the learning curves
behind it (`results/curves.csv`) and the report's identity over them."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import snakemake
import yaml
from conftest import with_sections
from PIL import Image
from test_report import DOMAINS, STAMP, grid_params, write_evals

from align.report import FIGURES, TABLE_NAMES, report_identity
from align.report.collect import collect_evaluations
from align.report.curves import (
    CURVE_COLUMNS,
    OOD,
    VALIDATION,
    curve_pngs,
    curves_csv,
    read_curves,
)
from align.report.page import PAGE, PageInputs, results_page
from align.report.tabular import PROVENANCE_COLUMNS
from align.runs import RunSpec

CHROMIUM = shutil.which("chromium")
PROJECT = Path(__file__).resolve().parents[1]


def png(colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def report_folder(folder: Path, figures: dict[str, str] = FIGURES) -> Path:
    """A report folder with a Markdown file per table, the verdict and the figures' PNGs."""
    for name in TABLE_NAMES:
        (folder / f"{name}.md").write_text(f"# Table {name}\n\n| Method | a/Acc |\n|---|---|\n"
                                           f"| ERM | **80.00** (n=1) |\n")
    (folder / "verdict.md").write_text("# Verdict\n\n| ALIGN vs | verdict |\n|---|---|\n"
                                       "| ERM | <script>alert(1)</script> |\n")
    for path in figures.values():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(png())
    return folder


def inputs(**changes) -> PageInputs:
    values = dict(dataset="synthetic", methods=["erm", "align"], domains=["gradient", "noise"],
                  seeds=[0], tables=TABLE_NAMES, verdict="verdict.md", figures=FIGURES,
                  curves={VALIDATION: png("blue")}, provenance=STAMP,
                  committed="2026-12-03T22:00:00+00:00")
    return PageInputs(**{**values, **changes})


# --- building the page ----------------------------------------------------------------------


def test_the_page_lists_each_method_with_its_provenance_and_escapes_html_in_names(tmp_path):
    page = results_page(report_folder(tmp_path), inputs(
        methods=["erm", "align", "<b>x&y</b>"], domains=["a<i>"]))
    methods = re.search(r'<dd class="methods">(.*?)</dd>', page).group(1)
    assert "ERM (<code>erm</code>)" in methods and "ALIGN (<code>align</code>)" in methods
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;" in methods and "<b>" not in page
    assert "a&lt;i&gt;" in page and "<i>" not in page
    # Raw HTML in the Markdown files is shown as text, never run.
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert all(value in page for value in (*STAMP.values(), "2026-12-03T22:00:00+00:00"))


def test_every_table_the_verdict_and_figure_are_on_the_page_as_html_and_data_uris(tmp_path):
    page = results_page(report_folder(tmp_path), inputs())
    sections = re.findall(r'<section class="report-table" id="table-(\w+)"><h3>Table \1</h3>'
                          r"\s*<table>", page)
    assert sections == list(TABLE_NAMES)
    assert "<td><strong>80.00</strong> (n=1)</td>" in page
    assert re.search(r'<section class="verdict" id="verdict"><h2>Verdict</h2>\s*<table>', page)
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(FIGURES) + 1  # the figures, then the one curve
    assert {base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in sources} == {
        png(), png("blue")}
    # Nothing to fetch: no external resource of any kind.
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)
    assert "<link" not in page and "<script" not in page and 'class="missing"' not in page


def test_a_missing_figure_or_table_is_named_on_the_page_not_dropped(tmp_path, caplog):
    folder = report_folder(tmp_path)
    (folder / FIGURES["fig4"]).unlink()
    (folder / "ood_table.md").unlink()
    page = results_page(folder, inputs(curves={}))
    assert f"Figure fig4 ({FIGURES['fig4']}) is missing: not written to {folder}" in page
    assert "ood_table.md is missing" in page
    assert "Learning curves is missing: no configured run has DVCLive files" in page
    assert page.count('class="missing"') == 3
    assert "fig4" in caplog.text and "ood_table.md" in caplog.text


# --- learning curves ------------------------------------------------------------------------


def log_curve(run_dir: Path, metric: str, rows: list[tuple[int, float]]) -> Path:
    """A DVCLive metric file as training writes it."""
    path = run_dir / "dvclive" / "plots" / "metrics" / f"{metric}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    name = metric.rsplit("/", 1)[-1]
    path.write_text(f"step\t{name}\n" + "".join(f"{s}\t{v}\n" for s, v in rows))
    return path


def test_curves_are_every_run_s_dvclive_files_and_its_ood_accuracy_in_long_form(tmp_path):
    params = grid_params(tmp_path, ["erm", "align"], [0, 1])
    runs = tmp_path / "runs"
    write_evals(runs, ["erm", "align"], [0, 1])
    for method in ("erm", "align"):
        for domain in DOMAINS:
            for seed in (0, 1):
                run_dir = RunSpec("synthetic", domain, method, seed).named_dir(runs)
                log_curve(run_dir, "train/ce", [(1, 0.7), (2, 0.5)])
                log_curve(run_dir, "val/accuracy", [(2, 60.0 + seed)])
    log_curve(RunSpec("synthetic", "noise", "align", 1).named_dir(runs), "train/egl", [(2, 0.3)])
    curves = read_curves(params, runs, collect_evaluations(params, runs))
    rows = list(csv.DictReader(io.StringIO(curves_csv(curves, STAMP))))
    assert list(rows[0]) == [*CURVE_COLUMNS, *PROVENANCE_COLUMNS]
    by = {(r["domain"], r["method"], r["seed"], r["metric"], r["step"]): r["value"] for r in rows}
    assert by[("gradient", "erm", "1", "train/ce", "2")] == "0.5"
    assert by[("noise", "align", "1", "val/accuracy", "2")] == "61"
    assert by[("noise", "align", "1", "train/egl", "2")] == "0.3"
    # ERM on gradient, seed 1: tested on noise at 82%, its selected step 290 (test_report's).
    assert by[("gradient", "erm", "1", OOD, "290")] == "82"
    assert len(rows) == 2 * 2 * 2 * (2 + 1 + 1) + 1
    assert {r["git_commit"] for r in rows} == {STAMP["git_commit"]}
    pngs = curve_pngs(curves, ["erm", "align"], STAMP)
    assert list(pngs) == [VALIDATION, "train/ce", "train/egl"]
    with Image.open(io.BytesIO(pngs[VALIDATION])) as image:
        assert image.info["params_hash"] == STAMP["params_hash"]


def test_a_changed_curve_changes_the_report_s_identity(tmp_path):
    params = with_sections(grid_params(tmp_path, ["erm"], [0]), grid={"domains": ["gradient"]})
    runs = tmp_path / "runs"
    write_evals(runs, ["erm"], [0])
    run_dir = RunSpec("synthetic", "gradient", "erm", 0).named_dir(runs)
    log_curve(run_dir, "val/accuracy", [(2, 60.0)])
    before = report_identity(params, runs)["key"]
    assert report_identity(params, runs)["key"] == before
    log_curve(run_dir, "val/accuracy", [(2, 61.0)])
    assert report_identity(params, runs)["key"] != before


# --- the page of a real report, in a real browser -------------------------------------------


def test_the_report_writes_the_page_and_the_curves_of_its_runs(report):
    _, _, results, written = report
    assert {results / PAGE, results / "curves.csv"} <= set(written)
    rows = list(csv.DictReader((results / "curves.csv").open()))
    assert {(r["domain"], r["method"]) for r in rows} == {
        (d, m) for d in DOMAINS for m in ("erm", "align")}
    assert {VALIDATION, "train/ce", "train/egl", OOD} <= {r["metric"] for r in rows}
    # Two steps, validated at the last: the curve's only point is step 2.
    assert {r["step"] for r in rows if r["metric"] == VALIDATION} == {"2"}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Headless Chromium from the distribution's package (`make browser` says how to install
    it), with a HOME of its own: CI runs the tests as an ordinary user whose HOME may not be
    writable. Playwright starts Chromium without its sandbox (its default, kept): the sandbox
    needs user namespaces, which containers and CI runners often lack; the page is our own
    file, loaded with every network request refused."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (`make browser` prints the apt-get command)")
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("chromium-home")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, env=env)
        yield launched
        launched.close()


@pytest.mark.slow
def test_the_page_renders_in_chromium_with_every_table_figure_and_curve(report, browser):
    _, _, results, _ = report
    page_file = results / PAGE
    context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    page = context.new_page()
    requests, failed, errors = [], [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("requestfailed", lambda request: failed.append((request.url, request.failure)))
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_file.as_uri(), wait_until="load")

    assert failed == [] and errors == []
    assert [url for url in requests if not url.startswith("data:")] == [page_file.as_uri()]
    images = page.eval_on_selector_all(
        "img", "all => all.map(i => [i.closest('figure').id, i.complete, i.naturalWidth])")
    assert {name for name, _, _ in images} >= {f"figure-{name}" for name in FIGURES}
    assert all(complete and width > 0 for _, complete, width in images), images
    tables = page.eval_on_selector_all(
        "section.report-table", "all => all.map(s => [s.id, s.querySelectorAll('table').length])")
    assert [name for name, _ in tables] == [f"table-{name}" for name in TABLE_NAMES]
    assert all(count >= 1 for _, count in tables)
    assert page.locator("#verdict table").count() >= 1
    curves = page.eval_on_selector_all("figure.curve", "all => all.map(f => f.dataset.metric)")
    assert curves[0] == VALIDATION and "train/ce" in curves
    assert page.locator(".missing").count() == 0

    screenshot = results.parent / "index.png"
    page.screenshot(path=str(screenshot), full_page=True)
    height = page.evaluate("document.documentElement.scrollHeight")
    context.close()
    with Image.open(screenshot) as image:
        assert image.size == (1280, height)
    print(f"results page: {page_file} ({page_file.stat().st_size} bytes), screenshot:"
          f" {screenshot} (1280 x {height} px)")


VEGA_SCRIPTS = {"vega-embed@": "vega-embed/vega-embed.js", "vega-lite@": "vega-lite/vega-lite.js",
                "vega@": "vega/vega.js"}
"""DVC's plots page loads these from a CDN; Snakemake ships copies (its report uses them), which
the test serves instead: no network."""


@pytest.mark.slow
def test_dvc_plots_overlays_every_run_s_curves_per_metric_and_domain(report, browser, tmp_path):
    _, _, results, _ = report
    project = tmp_path / "project"
    (project / "results").mkdir(parents=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=project, check=True)
    shutil.copytree(PROJECT / ".dvc" / "plots", project / ".dvc" / "plots")
    shutil.copyfile(results / "curves.csv", project / "results" / "curves.csv")
    stage = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["report"]
    (definition,) = [p for p in stage["plots"] if isinstance(p, dict) and "results/curves.csv" in p]
    # As in the project: declared by the report stage (a top-level `plots:` entry would also be
    # drawn a second time, as a plain file with the default template).
    (project / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"report": {"cmd": "true", "plots": [definition]}}}))
    shown = subprocess.run([*dvc, "plots", "show", "--show-vega", "results/curves.csv"],
                           cwd=project, check=True, capture_output=True, text=True).stdout
    spec = json.loads(shown)
    assert (spec["facet"]["row"]["field"], spec["facet"]["column"]["field"]) == ("metric", "domain")
    encoding = spec["spec"]["encoding"]
    assert (encoding["color"]["field"], encoding["strokeDash"]["field"]) == ("method", "seed")
    rows = list(csv.DictReader((results / "curves.csv").open()))
    assert len(spec["data"]["values"]) == len(rows)

    subprocess.run([*dvc, "plots", "show", "-o", "plots", "results/curves.csv"], cwd=project,
                   check=True, capture_output=True)
    assets = Path(snakemake.__file__).parent / "assets" / "data"
    context = browser.new_context()
    page = context.new_page()
    messages = []
    page.on("console", lambda m: messages.append(m.text) if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda error: messages.append(str(error)))

    def serve(route) -> None:
        name = next(n for n in VEGA_SCRIPTS if n in route.request.url)
        route.fulfill(body=(assets / VEGA_SCRIPTS[name]).read_bytes(),
                      content_type="application/javascript")

    page.route("https://cdn.jsdelivr.net/**", serve)
    page.goto((project / "plots" / "index.html").as_uri(), wait_until="networkidle")
    page.wait_for_selector("canvas")
    sizes = page.eval_on_selector_all("canvas", "all => all.map(c => [c.width, c.height])")
    context.close()
    assert messages == []
    (size,) = sizes  # one chart: every run, metric and domain on it
    assert min(size) > 100
