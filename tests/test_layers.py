"""The import graph of `align/`: who imports whom, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "align"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of `align` it imports (`from align.x import y` names `align.x.y`
    when that is a module, else `align.x`)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    imported.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {other for other in imported if other in modules and other != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_module_of_align_imports_itself_through_others() -> None:
    # identity -> report.collect -> evaluate -> runs/store -> identity was one: the experiment's
    # rows now sit below both (align/experiment.py).
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LAYERS = (
    ("foundation", ("align", "align.errors", "align.schema", "align.registry", "align.atomic",
                    "align.digests", "align.threads", "align.device", "align.checkpoint",
                    "align.dvc_cache", "align.store", "align.rows")),
    ("components", ("align.data", "align.data.images", "align.data.layout", "align.data.download",
                    "align.data.http_download", "align.data.gdrive_download",
                    "align.data.checksums", "align.data.archives", "align.data.transforms",
                    "align.data.synthetic_draw", "align.data.registry",
                    "align.data.sources*", "align.models*", "align.explain*", "align.metrics*",
                    "align.methods*", "align.report.statistics", "align.masks")),
    ("parameters", ("align.config",)),
    ("experiment", ("align.experiment", "align.provenance", "align.stages", "align.identity",
                    "align.masks.layout")),
    ("stages", ("align.data.acquire", "align.data.split", "align.data.shards",
                "align.data.loader", "align.masks.sam", "align.runs", "align.train",
                "align.evaluate", "align.report*")),
    ("orchestration", ("align.outputs", "align.cli")),
)
"""The layers of `align/`, lowest first: a module imports from its own layer or lower ones.
Components (datasets, models, methods, metrics) know nothing of the parameter file; the parameters
are assembled from their configs; the experiment (its rows, identities) reads the parameters; the
stages compute; the orchestration runs the stages and checks their outputs."""


def layer_of(module: str) -> int | None:
    for rank, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            prefix = pattern.rstrip("*")
            if module == prefix or (pattern.endswith("*") and module.startswith(prefix + ".")):
                return rank
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer than its own, as a readable line."""
    return [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {other} ({LAYERS[layer_of(other)][0]})"
        for module, imported in sorted(graph.items())
        for other in sorted(imported)
        if layer_of(other) > layer_of(module)  # type: ignore[operator]
    ]


def test_every_module_has_a_layer_and_imports_nothing_above_it() -> None:
    graph = import_graph()
    unplaced = sorted(module for module in graph if layer_of(module) is None)
    assert not unplaced, f"place {unplaced} in a layer of LAYERS"
    assert upward_imports(graph) == []


def test_the_layer_check_finds_an_import_from_below() -> None:
    # data's registry reading the parameters would make config and data one knot again.
    graph = {"align.data.registry": {"align.config"}, "align.config": {"align.data.registry"}}
    assert upward_imports(graph) == [
        "align.data.registry (components) imports align.config (parameters)"
    ]


LONGEST_MODULE = 450
"""Lines: a module past about 400 usually does more than one thing (issue 17): split it."""


def test_no_module_of_align_is_long() -> None:
    lengths = {
        module_name(path): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {m: n for m, n in lengths.items() if n > LONGEST_MODULE} == {}
