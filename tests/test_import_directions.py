"""The package's arrows point down (style.md; issue 11): cli -> config -> master -> worker
-> wsgi -> proto -> errors, with no import cycles, checked on the source (every import,
function-level ones included, since a late import is still an arrow for the reader)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "preforkd"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_import_graph()) == []


def _reaches(graph: dict[str, set[str]], source: str, prefix: str) -> list[str]:
    return sorted(t for t in graph.get(source, ()) if t == prefix or t.startswith(prefix + "."))


def test_lower_layers_never_import_higher_ones() -> None:
    graph = _import_graph()
    wrong = []
    for module in graph:
        layer = module.split(".")[1] if module.count(".") else ""
        forbidden = {
            "proto": ("preforkd.wsgi", "preforkd.worker", "preforkd.master", "preforkd.cli"),
            "wsgi": ("preforkd.worker", "preforkd.master", "preforkd.cli"),
            "worker": ("preforkd.master", "preforkd.cli"),
            "master": ("preforkd.cli",),
        }.get(layer, ())
        if module in ("preforkd.heartbeat", "preforkd.cli"):  # shared, or the top
            forbidden = ("preforkd.worker", "preforkd.master") if module != "preforkd.cli" else (
                "preforkd.worker",
            )  # fmt: skip
        for prefix in forbidden:
            wrong += [f"{module} -> {target}" for target in _reaches(graph, module, prefix)]
    assert wrong == []
