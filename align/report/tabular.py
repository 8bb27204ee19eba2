"""Rows as CSV and as Markdown tables, written by pandas (Markdown through tabulate's pipe tables).

Every CSV of the report carries its provenance on each row (the git commit and the params.yaml
hash), so a row copied out of its file still says where it came from; that is added here, once.
Cells are kept as given (`dtype=object`): an int stays an int, a missing value (None) is an empty
field, and nothing in a Markdown cell is read as a number and re-aligned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

PROVENANCE_COLUMNS = ("git_commit", "params_hash")


def csv_number(value: float | None) -> str:
    """A measured number in a CSV: six significant digits, empty where there is none."""
    return "" if value is None else f"{value:.6g}"


def csv_text(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], provenance: Mapping[str, Any]
) -> str:
    """CSV with a header row, one line per row, the provenance columns last on every row."""
    stamp = [provenance[column] for column in PROVENANCE_COLUMNS]
    frame = pd.DataFrame([[*row, *stamp] for row in rows],
                         columns=[*columns, *PROVENANCE_COLUMNS], dtype=object)
    return frame.to_csv(index=False, lineterminator="\n")


def escape_cell(text: str) -> str:
    """A `|` inside a cell would end it."""
    return str(text).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A pipe table, columns padded to their widest cell so that it reads as plain text too."""
    frame = pd.DataFrame([[escape_cell(cell) for cell in row] for row in rows],
                         columns=[escape_cell(name) for name in header], dtype=object)
    return frame.to_markdown(index=False, tablefmt="pipe", disable_numparse=True)
