"""The package's shape, held by tests: no import cycle between ragmart's modules, no module
over the size a reader can hold (about 400 lines), and one module that names dbt relations.

Imports are read from the source (every ``import``/``from ... import`` in a module, the ones
inside functions too: a lazy import is still a dependency a reader has to follow).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ragmart"
MAX_LINES = 400
TOLERANCE = 25  # "about 400": a module may run a screenful over, never a second module's worth


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ragmart modules `name` imports (a name imported from a package counts as its
    submodule when there is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # "ragmart" itself only re-exports the public API; a parent package is not a dependency
    return {m for m in found if m in known and m not in (name, "ragmart")
            and not name.startswith(m + ".")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    assert len(graph) > 20, sorted(graph)  # the walk found the package
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check above can fail: a graph with a cycle is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_relations_imports_nothing_of_ragmart() -> None:
    assert _graph()["ragmart.relations"] == set()


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_over_about_400_lines(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES + TOLERANCE, f"{name} has {lines} lines; split it by purpose"


RELATION = re.compile(r"""["'](fct_chunk_\w+_|int_document_versions_served_|dim_document_access"""
                      r"""|embedding_runs|embedding_cache_pending|published_eval_metrics)["']""")


def test_only_relations_names_the_relations() -> None:
    """A relation name written as a string literal stands only in ragmart/relations.py."""
    elsewhere = {name: RELATION.findall(path.read_text()) for name, path in _modules().items()
                 if name != "ragmart.relations"}
    assert {name: found for name, found in elsewhere.items() if found} == {}
