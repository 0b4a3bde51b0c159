"""The import graph of gateway/ and plugins/: no cycles, no imports hidden in functions.

A module-level cycle makes import order matter and hides which part depends
on which; an import inside a function is how such a cycle is usually dodged.
Both are read from the source with ``ast``; nothing is imported.  Imports
under ``if TYPE_CHECKING:`` only name types for annotations and never run,
so they are not edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("gateway", "plugins")
# The one module of gateway/ that may import plugins/: the stage registry's list.
REGISTRY = "gateway.stages"
# Function-level imports of project modules that are allowed, and why.
LAZY_ALLOWED_PACKAGES = (
    # The CLI loads a command's modules only when that command runs.
    "gateway.cli",
)
LAZY_ALLOWED_EDGES = {
    # ldap3 is loaded only when settings choose auth.backend: ldap.
    ("gateway.app", "gateway.auth.ldap"),
    # redis-py is loaded only when locks.storage names a Redis.
    ("gateway.app", "gateway.dav.redislocks"),
    # Flask and the console are loaded by serving processes only, not by every command.
    ("gateway.app", "gateway.console.app"),
    ("gateway.app", "gateway.uploads.app"),
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the project module it imports
    line: int


@dataclass
class Graph:
    modules: dict[str, Path]
    top: list[Import] = field(default_factory=list)  # run when the module is imported
    lazy: list[Import] = field(default_factory=list)  # run when a function is called
    type_only: list[Import] = field(default_factory=list)  # under TYPE_CHECKING


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {
        module_name(root, path): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def _imported_names(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """Dotted names an import statement may load: each module, and each ``from`` name."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _project_module(name: str, modules: dict[str, Path]) -> str | None:
    """The project module a dotted name lies in (``a.b.func`` -> ``a.b``), if any."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, where: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import below ``node`` with where it runs: ``top``, ``lazy`` or ``type_only``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, where
        elif isinstance(child, ast.If) and _is_type_checking(child):
            yield from _walk(ast.Module(body=child.body, type_ignores=[]), "type_only")
            yield from _walk(ast.Module(body=child.orelse, type_ignores=[]), where)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, "lazy" if where == "top" else where)
        else:
            yield from _walk(child, where)


def build_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    graph = Graph(find_modules(root, packages))
    for name, path in graph.modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, where in _walk(tree, "top"):
            targets = {_project_module(n, graph.modules) for n in _imported_names(node, package)}
            for target in sorted(t for t in targets if t is not None and t != name):
                getattr(graph, where).append(Import(name, target, node.lineno))
    return graph


def runtime_edges(graph: Graph) -> dict[str, set[str]]:
    """What importing each module imports first: its module-level imports and its
    parent packages (``import a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
    edges: dict[str, set[str]] = {name: set() for name in graph.modules}
    for imp in graph.top:
        edges[imp.source].add(imp.target)
    for name in graph.modules:
        parts = name.split(".")
        edges[name].update(
            parent for i in range(1, len(parts)) if (parent := ".".join(parts[:i])) in edges
        )
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def lazy_allowed(imp: Import) -> bool:
    in_package = any(
        imp.source == package or imp.source.startswith(package + ".")
        for package in LAZY_ALLOWED_PACKAGES
    )
    return in_package or (imp.source, imp.target) in LAZY_ALLOWED_EDGES


# --- the project ---------------------------------------------------------------


def test_no_module_level_import_cycle() -> None:
    found = cycles(runtime_edges(build_graph(REPO)))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_function_level_import_of_a_project_module() -> None:
    graph = build_graph(REPO)
    assert any(lazy_allowed(imp) for imp in graph.lazy)  # the allowlist still matches code
    hidden = [f"{i.source}:{i.line} imports {i.target}" for i in graph.lazy if not lazy_allowed(i)]
    assert not hidden, "function-level imports of project modules:\n" + "\n".join(hidden)


def test_gateway_reaches_plugins_only_through_the_stage_registry() -> None:
    graph = build_graph(REPO)
    every = [*graph.top, *graph.lazy, *graph.type_only]
    outside = sorted(
        f"{i.source}:{i.line} imports {i.target}"
        for i in every
        if i.source.split(".")[0] == "gateway"
        and i.target.split(".")[0] == "plugins"
        and i.source != REGISTRY
    )
    assert not outside, "gateway imports plugins outside the stage registry:\n" + "\n".join(outside)
    assert any(i.source == REGISTRY and i.target.startswith("plugins") for i in graph.top)


# --- the checker itself, on small trees ----------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "app/__init__.py": "from app.formats import TABLE\n",
            "app/formats.py": "from app.jpeg import Jpeg\nTABLE = [Jpeg]\n",
            "app/jpeg.py": "class Jpeg: ...\n",
            "app/other.py": "import json\n",
        },
    )
    found = cycles(runtime_edges(build_graph(root, ("app",))))
    assert found == [["app", "app.formats", "app.jpeg"]]


def test_imports_are_sorted_by_where_they_run(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/a.py": (
                "from typing import TYPE_CHECKING\n"
                "from . import b\n"
                "if TYPE_CHECKING:\n"
                "    from app.c import C\n"
                "class K:\n"
                "    def run(self) -> None:\n"
                "        from .c import helper\n"
                "        helper()\n"
            ),
            "app/b.py": "import os\n",
            "app/c.py": "from app import a\ndef helper() -> None: ...\nclass C: ...\n",
        },
    )
    graph = build_graph(root, ("app",))
    # ``from app import a`` imports the package ``app`` too
    assert [(i.source, i.target) for i in graph.top] == [
        ("app.a", "app"),
        ("app.a", "app.b"),
        ("app.c", "app"),
        ("app.c", "app.a"),
    ]
    assert [(i.source, i.target, i.line) for i in graph.lazy] == [("app.a", "app.c", 7)]
    assert [(i.source, i.target) for i in graph.type_only] == [("app.a", "app.c")]
    assert cycles(runtime_edges(graph)) == []
