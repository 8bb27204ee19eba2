"""The experiment's rows: which methods the report shows, in which table and under which name, and
which configured runs give a row its numbers. The report reads them, and so does the identity of
its job; both sit above this module, which reads only the parameters and the method registry."""

from __future__ import annotations

from typing import Any

from align.config import Params, select
from align.methods.base import METHODS, resolve_config

MAIN_METHODS = ("erm", "irm", "mixup", "sgt", "sgdrop", "dre", "align")
"""The baselines and ALIGN, in the order of the paper's Tables 1 and 3."""
ABLATION_ROWS = ("wo_eg", "m_sam", "m_gray", "m_gt", "align")
"""Table 2's rows: ALIGN's ablations, then ALIGN itself."""


def display_name(method: str) -> str:
    """The paper's spelling of a method name (`sgdrop` -> `SGDrop`); unknown names unchanged."""
    return (METHODS.get(method).display_name or method) if method in METHODS else method


def is_ablation(method: str) -> bool:
    return method in ABLATION_ROWS and method != "align"


def canonical_method(params: Params, method: str, dataset: str) -> tuple[str, dict[str, Any]]:
    """(name, resolved config) of the experiment a method name stands for on `dataset`."""
    entry = METHODS.get(method)  # an unknown name fails here, naming the known ones
    raw = select(params, f"methods.{method}")
    return entry.canonical(method, resolve_config(method, raw, dataset))


def configured_methods(params: Params) -> list[str]:
    """`grid.methods`, then Table 2's rows that are not among them."""
    grid = list(params.grid.methods)
    return grid + [name for name in ABLATION_ROWS if name not in grid]


def method_source(params: Params, method: str) -> tuple[str | None, str]:
    """(configured method whose runs give `method`'s numbers, note); (None, why) if none does."""
    if method in params.grid.methods:
        return method, ""
    identity = canonical_method(params, method, params.dataset)
    for other in params.grid.methods:
        if canonical_method(params, other, params.dataset) == identity:
            return other, (
                f"{display_name(method)} is the same experiment as {display_name(other)} with"
                f" these parameters; its numbers are {display_name(other)}'s runs"
            )
    return None, f"{method} not in grid.methods"
