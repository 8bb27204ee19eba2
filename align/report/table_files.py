"""The tables of `align.report.tables` as files: CSV, Markdown and metric numbers.

The CSV holds numbers, a row per cell (mean, the interval's ends, n and the full reason for
missing seeds); Markdown cells carry a numbered note, listed under the table, so the table stays
readable. Markdown marks the best mean in bold:
per column (the best method for a domain and metric) in Tables 1 and 2 and the mask-quality
table, per row in Table 3 (the best method for a train -> test pair, as the paper compares
methods there). Best is the largest value, except for sufficiency, where lower is better; means
are compared as printed, so equal printed values are both bold.
"""

from __future__ import annotations

from typing import Any

from align.report.tables import Table
from align.report.tabular import csv_number, csv_text, escape_cell, markdown_table

DIGITS = 2
CELL_CAPTION = (
    "Cells: mean ± half-width of its 95% CI over seeds (Student t: `t(0.975, n-1) * s /"
    " sqrt(n)`, s the sample standard deviation), n = seeds; one seed gives no interval."
)


# --- best values -------------------------------------------------------------------------------


def best_cells(table: Table) -> set[tuple[int, str]]:
    """(row index, column key) of the best printed mean along the table's `best_along` axis."""
    if table.best_along == "column":
        groups = [
            ([(i, column.key) for i in range(len(table.rows))], column.higher_is_better)
            for column in table.columns
            if column.ranked
        ]
    else:
        direction = all(column.higher_is_better for column in table.columns)
        groups = [
            ([(i, column.key) for column in table.columns], direction)
            for i in range(len(table.rows))
        ]
    best: set[tuple[int, str]] = set()
    for cells, higher in groups:
        printed = {
            cell: round(mean, DIGITS)
            for cell in cells
            if (mean := table.rows[cell[0]].cells[cell[1]].mean) is not None
        }
        if printed:
            target = max(printed.values()) if higher else min(printed.values())
            best.update(cell for cell, value in printed.items() if value == target)
    return best


# --- renderings --------------------------------------------------------------------------------


CSV_NUMBERS = ("column", "mean", "ci_low", "ci_high", "n", "n_configured", "note")
"""A table's CSV columns after its index: one row per cell."""


def to_csv(table: Table, provenance: dict[str, Any]) -> str:
    """The table as CSV, one row per cell (long form: numbers for machines, the `±` text is the
    Markdown's): the index columns, the table's column key, the mean over seeds, the 95% t
    interval's ends (empty for one seed), the seeds with a value and the seeds configured, why
    seeds are missing (`note`), the checkpoint steps of the row's runs, and the git commit and
    params hash on every row (so each row says where it came from)."""
    steps = ["selected_steps"] if table.selected else []

    rows = []
    for row in table.rows:
        for column in table.columns:
            cell = row.cells[column.key]
            mean, half = cell.mean, cell.half_width
            low, high = (None, None) if mean is None or half is None else (mean - half,
                                                                           mean + half)
            note = (cell.reason or "no value") if cell.n < cell.expected or not cell.n else ""
            rows.append([
                *row.labels, column.key, csv_number(mean), csv_number(low), csv_number(high),
                cell.n, cell.expected, note, *([row.steps] if steps else []),
            ])
    return csv_text([*table.index, *CSV_NUMBERS, *steps], rows, provenance)


def _steps_markdown(table: Table) -> list[str]:
    """The checkpoint each run selected, as a small table: a row per method, a column per
    training domain with the steps in seed order, and the method's first selectable step."""
    if not table.selected:
        return []
    first_row = next(iter(table.selected.values()))
    domains = list(first_row)
    seeds = next(iter(first_row.values())).seeds if first_row else ()
    lines = [
        f"Selected checkpoints, by training domain: the training step of the model each run kept"
        f" (best validation accuracy), seeds {', '.join(map(str, seeds))} in that order; a run"
        f" may only select a step from its method's first selectable step on (after its"
        f" warm-up).",
        "",
    ]
    rows = []
    for label, by_domain in table.selected.items():
        firsts = [s.first_selectable for s in by_domain.values() if s.first_selectable is not None]
        first = str(firsts[0]) if firsts else "n/a"
        rows.append([label, first, *(s.text() for s in by_domain.values())])
    return [*lines, markdown_table(["Method", "first selectable", *domains], rows), ""]


def to_markdown(table: Table, provenance: dict[str, Any]) -> str:
    """The table in Markdown: best values in bold, reasons as numbered notes below it, and a
    footer naming the git commit and params hash."""
    best = best_cells(table)
    reasons: dict[str, int] = {}

    def cell_text(i: int, key: str) -> str:
        summary = table.rows[i].cells[key]
        if summary.mean is None:
            number = reasons.setdefault(summary.reason or "no value", len(reasons) + 1)
            return f"n/a [{number}]"
        value = summary.value_text(DIGITS)
        if (i, key) in best:
            value = f"**{value}**"
        count = summary.count_text()
        if summary.n < summary.expected:
            number = reasons.setdefault(summary.reason, len(reasons) + 1)
            count = count.replace(f"of {summary.expected}", f"of {summary.expected} [{number}]")
        return f"{value} ({count})"

    header = [*table.index, *(c.key for c in table.columns)]
    lines = [
        f"# {table.title}",
        "",
        f"{table.caption} {CELL_CAPTION} **Bold**: the best mean in each {table.best_along}.",
        "",
        markdown_table(header, [
            [*row.labels, *(cell_text(i, c.key) for c in table.columns)]
            for i, row in enumerate(table.rows)
        ]),
        "",
    ]
    if reasons:
        lines += [f"[{number}] {escape_cell(reason)}  " for reason, number in reasons.items()]
        lines.append("")
    lines += _steps_markdown(table)
    if table.notes:
        lines += [f"Note: {note}" for note in table.notes]
        lines.append("")
    lines.append(
        f"Made by `align report` from git commit `{provenance['git_commit']}` and params.yaml"
        f" hash `{provenance['params_hash']}`."
    )
    return "\n".join(lines) + "\n"
