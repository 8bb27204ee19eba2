"""The paper's figures: Fig. 2 (accuracy on the training domain's test split with the background
outside each mask blurred), Fig. 4 (case study: each method's Grad-CAM of the true class) and
Fig. 5 (masker, SAM and ground-truth masks side by side, each mask labelled with its IoU against
the ground truth and its spread, the ground truth with the object's area); and where each map
looks (stacked bars: the share of its mass on the object, the shortcut and elsewhere). Fig. 4
and Fig. 5 carry a colourbar of their maps' values (0 to 1); the value axis of a bar chart spans
0 to 100% and more where an error bar reaches beyond.

Figures are drawn on `matplotlib.figure.Figure` objects with no pyplot state, at a fixed size: a
panel is PANEL_WIDTH x PANEL_HEIGHT inches at DPI dots per inch (sizes are multiples of 1/4 inch,
so the pixel size is exact), whatever the labels hold. Images are the first test images of each
domain, runs the first configured seed. A panel that cannot be drawn (run not trained, SAM masks
unavailable, ...) says why in its place. Each PNG names the git commit and params hash in a footer
and in its metadata (`git_commit`, `params_hash` text chunks).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from align.atomic import atomic_path
from align.experiment import display_name
from align.metrics import iou, spread
from align.report.collect import Evaluations, Summary
from align.report.examples import (
    explain_true_class,
    first_test_images,
    masker_masks,
)
from align.report.tables import ATTENTION_REGIONS, Table, main_methods
from align.report.tabular import csv_text

DPI = 300
PANEL_WIDTH = 1.5
PANEL_HEIGHT = 1.75
"""Inches per image panel, with room for a title above and a label below the image."""
FOOTER_HEIGHT = 0.25
COLORBAR_WIDTH = 0.5
"""Inches beside the image panels of Fig. 4 and Fig. 5 for their colourbar."""
COLORBAR_LENGTH = 1.5
"""Inches: the colourbar's length, whatever the number of rows."""
CASE_STUDY_IMAGES = 1
"""Images per domain in Fig. 4 (the paper shows two samples in all)."""
GALLERY_IMAGES = 2
"""Images per domain in Fig. 5."""
BLUR_SOURCES = {"none": "no blur", "gt": "GT mask", "masker": "ALIGN masker", "sam": "SAM"}
"""Fig. 2's bars: the mask whose outside is blurred (`background_blur` keys of an eval record)."""
BLUR_LEGEND_TITLE = "Blurred in the test images:"
BLUR_LEGEND = {
    "none": "nothing",
    "gt": "background outside the GT mask",
    "masker": "background outside ALIGN's masker",
    "sam": "background outside SAM's mask",
}
"""Fig. 2's legend, under BLUR_LEGEND_TITLE: what was blurred in the test images of each bar."""
FIG2_PANEL_HEIGHT = 2.5
FIG2_LEGEND_HEIGHT = 0.5
FIG2_FOOTER_HEIGHT = 0.5


def _provenance_line(provenance: dict[str, Any], extra: str = "") -> str:
    line = f"align report | git {provenance['git_commit']} | params {provenance['params_hash']}"
    return f"{line} | {extra}" if extra else line


def new_figure(width: float, height: float, footer: float, text: str) -> Figure:
    """A figure of `width` x `height` inches whose bottom `footer` inches hold `text`."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    figure.get_layout_engine().set(rect=(0, footer / height, 1, 1 - footer / height))
    wrapped = textwrap.fill(text, width=int(width * 22))
    figure.text(0.005, 0.005, wrapped, fontsize=4, ha="left", va="bottom", color="0.3")
    return figure


def save_figure(figure: Figure, path: Path, provenance: dict[str, Any]) -> Path:
    """Write `figure` as PNG to `path` atomically (a complete file or none), provenance in its
    metadata."""
    with atomic_path(path) as partial:
        figure.savefig(partial, format="png", dpi=DPI, metadata=png_metadata(provenance))
    return path


def png_metadata(provenance: dict[str, Any]) -> dict[str, str]:
    """The PNG text chunks of every report figure: who wrote it, the commit and params hash."""
    return {
        "Software": "align report",
        "git_commit": str(provenance["git_commit"]),
        "params_hash": str(provenance["params_hash"]),
    }


def _blank(ax: Axes, reason: str) -> None:
    """An empty panel that says why it is empty."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_box_aspect(1)  # square, like the image panels beside it
    for spine in ax.spines.values():
        spine.set_color("0.8")
    ax.text(0.5, 0.5, textwrap.fill(reason, 28), fontsize=4, ha="center", va="center",
            color="0.35", transform=ax.transAxes, wrap=True)


def _colorbar(figure: Figure, axes: Any, colours: str, label: str) -> None:
    """A colourbar right of `axes` for values 0 to 1 drawn in the colour map `colours`, about
    COLORBAR_LENGTH inches long."""
    length = min(1.0, COLORBAR_LENGTH / figure.get_figheight())
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), colours), ax=axes, shrink=length,
                          aspect=15)
    bar.set_label(label, fontsize=5)
    bar.ax.tick_params(labelsize=5)


def _room_for_error_bars(ax: Axes, ends: list[float], axis: str) -> None:
    """Widen `ax`'s value axis (from 0 to 100, in %) to hold the ends of every error bar, so
    that no interval is cut at 100 (or 0)."""
    finite = [end for end in ends if math.isfinite(end)]
    low, high = min([0.0, *finite]), max([100.0, *finite])
    pad = 0.02 * (high - low)  # a cap on the frame would hide it
    set_limits = ax.set_ylim if axis == "y" else ax.set_xlim
    set_limits(low - pad if low < 0 else 0.0, high + pad if high > 100 else 100.0)


def _image(ax: Axes, pixels: Tensor) -> None:
    """Show a (3,H,W) or (1,H,W) tensor in [0,1]."""
    array = pixels.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        ax.imshow(array[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(array, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


# --- Fig. 4 ------------------------------------------------------------------------------------


def case_study_figure(
    evaluations: Evaluations, provenance: dict[str, Any], device: torch.device
) -> Figure:
    """Fig. 4: per domain, its first test image and each method's Grad-CAM of the true class over
    it, titled with the probability the method gives the true class."""
    params = evaluations.params
    methods = main_methods(evaluations)
    domains = evaluations.train_domains
    seed = evaluations.seeds[0]
    rows = len(domains) * CASE_STUDY_IMAGES
    columns = 1 + len(methods)
    height = rows * PANEL_HEIGHT + FOOTER_HEIGHT
    figure = new_figure(
        columns * PANEL_WIDTH + COLORBAR_WIDTH, height, FOOTER_HEIGHT,
        _provenance_line(provenance, f"Grad-CAM of the true class, seed {seed}"),
    )
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()  # rows of a domain with fewer test images stay empty
    for d, domain in enumerate(domains):
        images = first_test_images(params, domain, CASE_STUDY_IMAGES)
        explanations = {
            method: explain_true_class(evaluations.run_dir(method, domain, seed), images, device)
            for method in methods
        }
        for i in range(len(images.labels)):
            row = axes[d * CASE_STUDY_IMAGES + i]
            for ax in row:
                ax.set_axis_on()
            _image(row[0], images.pixels[i])
            row[0].set_title("Image", fontsize=6)
            row[0].set_xlabel(f"[{images.class_names[i]}]", fontsize=6)
            row[0].set_ylabel(domain, fontsize=6)
            for ax, method in zip(row[1:], methods, strict=True):
                ax.set_title(display_name(method), fontsize=6)
                found = explanations[method]
                if isinstance(found, str):
                    _blank(ax, found)
                    continue
                _image(ax, images.pixels[i])
                ax.imshow(found.maps[i, 0].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1,
                          interpolation="bilinear")
                ax.set_xlabel(f"Prob. {100 * found.true_probability[i].item():.2f}%", fontsize=6)
    _colorbar(figure, axes, "jet",
              "Grad-CAM of the true class (each map / its maximum), over the image at 50%")
    return figure


# --- Fig. 5 ------------------------------------------------------------------------------------


def mask_label(mask: Tensor, gt: Tensor | str) -> str:
    """`IoU 45.2 | spread 21.0` (in %) for one mask (1,H,W) in [0,1]; the spread alone without
    a ground truth, `IoU n/a` when the ground truth has no object."""
    text = f"spread {100 * spread(mask[None]).item():.1f}"
    if isinstance(gt, str):
        return text
    score = iou(mask[None], gt[None]).item()
    return f"IoU {'n/a' if math.isnan(score) else f'{100 * score:.1f}'} | {text}"


def mask_gallery_figure(
    evaluations: Evaluations, provenance: dict[str, Any], device: torch.device
) -> Figure:
    """Fig. 5 (lower part): rows of test images with ALIGN's masker mask, SAM's mask and the
    ground-truth mask; under each mask its IoU (%) against the ground truth and its spread (%,
    the standard deviation of its values over the pixels: 0 for a uniform mask), under the
    ground truth the object's area (%)."""
    params = evaluations.params
    seed = evaluations.seeds[0]
    domains = evaluations.train_domains
    rows = len(domains) * GALLERY_IMAGES
    height = rows * PANEL_HEIGHT + FOOTER_HEIGHT
    figure = new_figure(
        4 * PANEL_WIDTH + COLORBAR_WIDTH, height, FOOTER_HEIGHT,
        _provenance_line(
            provenance, f"ALIGN masker of seed {seed}; IoU (mask >= 0.5) and spread (std of the"
            " mask over its pixels) in %"
        ),
    )
    axes = figure.subplots(rows, 4, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()  # rows of a domain with fewer test images stay empty
    titles = ("Image", "Masker (ALIGN)", "SAM", "Ground truth")
    for d, domain in enumerate(domains):
        images = first_test_images(params, domain, GALLERY_IMAGES)
        masker: Tensor | str = evaluations.notes.get("align", "align not in grid.methods")
        if "align" in evaluations.sources:
            masker = masker_masks(evaluations.run_dir("align", domain, seed), images, device)
        for i in range(len(images.labels)):
            row = axes[d * GALLERY_IMAGES + i]
            for ax in row:
                ax.set_axis_on()
            _image(row[0], images.pixels[i])
            row[0].set_ylabel(f"{domain} [{images.class_names[i]}]", fontsize=6)
            gt = images.gt_masks if isinstance(images.gt_masks, str) else images.gt_masks[i]
            for ax, masks in zip(row[1:3], (masker, images.sam_masks), strict=True):
                if isinstance(masks, str):
                    _blank(ax, masks)
                    continue
                _image(ax, masks[i])
                ax.set_xlabel(mask_label(masks[i], gt), fontsize=5)
            if isinstance(gt, str):
                _blank(row[3], gt)
            else:
                _image(row[3], gt)
                area = 100 * (gt >= 0.5).float().mean().item()
                row[3].set_xlabel(f"object {area:.1f}% of the image", fontsize=5)
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=6)
    _colorbar(figure, axes, "gray", "Mask value (1: object, kept; 0: background)")
    return figure


# --- Fig. 2 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """Fig. 2's accuracy (%) of one method's classifier on one domain's test split with the
    background outside one kind of mask blurred, over seeds."""

    method: str
    source: str
    domain: str
    accuracy: Summary


def blur_bars(evaluations: Evaluations) -> list[Bar]:
    return [
        Bar(method, source, domain,
            evaluations.summary(method, domain, domain, ("background_blur", source)))
        for domain in evaluations.train_domains
        for method in main_methods(evaluations)
        for source in BLUR_SOURCES
    ]


def blur_bars_csv(bars: list[Bar], provenance: dict[str, Any]) -> str:
    """Fig. 2's data in long form, one row per bar (`dvc plots` reads it): the mean over seeds and
    the half-width of its 95% interval (empty for one seed), an empty mean where a bar could not
    be computed, with the reason in `note`."""
    rows = []
    for bar in bars:
        summary = bar.accuracy
        rows.append([
            f"{bar.domain} | {display_name(bar.method)} | {BLUR_SOURCES[bar.source]}",
            bar.method, bar.source, bar.domain,
            "" if summary.mean is None else f"{summary.mean:.4f}",
            "" if summary.half_width is None else f"{summary.half_width:.4f}",
            summary.n,
            summary.reason,
        ])
    return csv_text(("bar", "method", "mask_source", "domain", "accuracy_mean", "accuracy_ci95",
                     "n", "note"), rows, provenance)


def blur_figure(
    evaluations: Evaluations, bars: list[Bar], provenance: dict[str, Any]
) -> Figure:
    """Fig. 2: per training domain, grouped bars of accuracy on that domain's test split by
    method, one bar per mask whose outside is blurred; error bars are the 95% t interval of the
    mean over seeds, the value axis wide enough to hold each whole."""
    methods = main_methods(evaluations)
    domains = evaluations.train_domains
    columns = max(1, min(2, len(domains)))
    rows = max(1, math.ceil(len(domains) / columns))
    panel_width = 1.0 + 0.5 * max(1, len(methods))
    shown = [s for s in BLUR_SOURCES if any(b.source == s and b.accuracy.n for b in bars)]
    absent = {
        BLUR_SOURCES[s]: next((b.accuracy.reason for b in bars if b.source == s), "")
        for s in BLUR_SOURCES if s not in shown
    }
    note = "; ".join(f"no {name} bars: {reason}" for name, reason in absent.items())
    height = rows * FIG2_PANEL_HEIGHT + FIG2_LEGEND_HEIGHT + FIG2_FOOTER_HEIGHT
    figure = new_figure(
        columns * panel_width, height, FIG2_FOOTER_HEIGHT, _provenance_line(provenance, note)
    )
    axes = figure.subplots(rows, columns, squeeze=False)
    width = 0.8 / max(1, len(shown))
    colours = {s: f"C{i}" for i, s in enumerate(BLUR_SOURCES)}
    for ax in axes.flat[len(domains):]:
        ax.set_axis_off()
    for ax, domain in zip(axes.flat, domains, strict=False):
        ax.set_title(f"trained on {domain},\ntested on its test split", fontsize=6)
        ax.set_xticks(range(len(methods)), [display_name(m) for m in methods], fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
        ax.set_ylabel("Accuracy (%)", fontsize=6)
        ends = []
        for k, source in enumerate(shown):
            found = [(j, b.accuracy) for j, m in enumerate(methods) for b in bars
                     if (b.method, b.domain, b.source) == (m, domain, source) and b.accuracy.n]
            spreads = [summary.half_width for _, summary in found]
            ends += [summary.mean + sign * (summary.half_width or 0.0)
                     for _, summary in found for sign in (-1, 1)]
            ax.bar([j + (k - (len(shown) - 1) / 2) * width for j, _ in found],
                   [summary.mean for _, summary in found], width,
                   # No error bar from a single seed, rather than a misleading zero.
                   yerr=[s if s is not None else float("nan") for s in spreads]
                   if any(s is not None for s in spreads) else None,
                   color=colours[source], error_kw={"elinewidth": 0.6, "capsize": 1.5})
        _room_for_error_bars(ax, ends, "y")
        if not shown:
            _blank(ax, next((b.accuracy.reason for b in bars if b.domain == domain), "no runs"))
    if shown:
        handles = [Patch(color=colours[s], label=BLUR_LEGEND[s]) for s in shown]
        figure.legend(handles=handles, loc="outside upper center", fontsize=5,
                      title=BLUR_LEGEND_TITLE, title_fontsize=5, frameon=False,
                      ncols=min(len(shown), 2 if figure.get_figwidth() >= 3.5 else 1))
    return figure


# --- where each map looks ----------------------------------------------------------------------

ATTENTION_COLOURS = {"object": "#2e7d32", "shortcut": "#c62828", "elsewhere": "#9e9e9e"}
ATTENTION_BAR_HEIGHT = 0.16
"""Inches per bar of the attention figure."""


def attention_figure(table: Table, provenance: dict[str, Any]) -> Figure:
    """Per training domain, a horizontal bar per map of `table` (the attention table), stacked
    object / shortcut / elsewhere in % of the map's mass; error bars on the object and shortcut
    segments are the 95% t interval of the mean over seeds. Rows without a value are left out,
    and the footer says which."""
    domains = list(dict.fromkeys(column.key.split("/")[0] for column in table.columns))
    labels = dict(ATTENTION_REGIONS)
    shown = [row for row in table.rows
             if any(cell.n for cell in row.cells.values())]
    missing = [row.labels[0] for row in table.rows if row not in shown]
    note = f"no value: {', '.join(missing)}" if missing else ""
    height = 0.6 + ATTENTION_BAR_HEIGHT * max(1, len(shown)) + FIG2_LEGEND_HEIGHT + FOOTER_HEIGHT
    figure = new_figure(2.5 + 2.25 * max(1, len(domains)), height, FOOTER_HEIGHT,
                        _provenance_line(provenance, note))
    axes = figure.subplots(1, max(1, len(domains)), squeeze=False, sharey=True)
    positions = list(range(len(shown)))[::-1]  # the table's first row on top
    for ax, domain in zip(axes.flat, domains, strict=False):
        ax.set_title(f"trained on {domain} (its test split)", fontsize=7)
        ax.set_xlabel("Share of the map's mass (%)", fontsize=6)
        ax.tick_params(labelsize=5)
        ax.set_yticks(positions, [row.labels[0] for row in shown])
        left = [0.0] * len(shown)
        ends = []
        for key in labels:
            summaries = [row.cells[f"{domain}/{labels[key]}"] for row in shown]
            means = [summary.mean or 0.0 for summary in summaries]
            spreads = [summary.half_width for summary in summaries]
            error = None
            if key != "elsewhere" and any(h is not None for h in spreads):
                error = [h if h is not None else float("nan") for h in spreads]
                ends += [a + b + sign * e for a, b, e in zip(left, means, error, strict=True)
                         for sign in (-1, 1)]
            ax.barh(positions, means, 0.8, left=left, color=ATTENTION_COLOURS[key],
                    xerr=error, error_kw={"elinewidth": 0.5, "capsize": 1.0, "ecolor": "black"})
            left = [a + b for a, b in zip(left, means, strict=True)]
        _room_for_error_bars(ax, ends, "x")
    if not shown:
        _blank(axes.flat[0], "no map has a value: no run evaluated on a dataset with object and"
                             " shortcut masks")
    handles = [Patch(color=ATTENTION_COLOURS[key], label=label) for key, label in labels.items()]
    figure.legend(handles=handles, loc="outside upper center", ncols=3, fontsize=6, frameon=False)
    return figure
