"""Imports run one way: leaves -> the delivery core -> sinks -> settings -> pipeline -> edges.

Every module of the package is parsed (not imported) with ``ast``: top-level, function-level
and ``TYPE_CHECKING`` imports, ``from . import x``, ``from .x import y``, absolute spellings
and ``importlib.import_module("django_sent_otel.x")``. The graph must have no cycle, and a
module may import only modules of a lower layer than its own (sinks never import each other,
the pipeline or the settings; the settings import leaves only). A module needing to be told
something by a higher one gets a hook (a registration function), never an upward import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import django_sent_otel

PACKAGE = "django_sent_otel"
SOURCE = Path(django_sent_otel.__file__).parent

#: Lowest first. A module may import modules of strictly lower layers only.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("leaves", frozenset({"_version", "_logging", "_names", "_compat", "package"})),
    ("core", frozenset({"delivery", "watcher"})),
    ("sinks", frozenset({"metrics", "tracing", "otel_metrics", "signals"})),
    ("settings", frozenset({"conf"})),
    ("pipeline", frozenset({"pipeline"})),
    ("adapters and edges", frozenset({"middleware", "asgi", "views", "gunicorn", "checks"})),
    ("entry points", frozenset({"__init__", "urls", "instrumentation", "apps"})),
)
#: Tighter than the layers: the settings read leaves only (never the core).
ONLY: dict[str, frozenset[str]] = {"conf": LAYERS[0][1]}


def _layer(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if module in members:
            return index
    raise AssertionError(f"{PACKAGE}.{module} is in no layer of LAYERS: place it")


def _modules(source: Path) -> set[str]:
    return {path.stem for path in source.glob("*.py")}


def _target(name: str, modules: set[str]) -> str | None:
    """The package module an absolute dotted name refers to (the root for the package)."""
    if name == PACKAGE:
        return "__init__"
    if name.startswith(PACKAGE + "."):
        first = name[len(PACKAGE) + 1 :].split(".", maxsplit=1)[0]
        return first if first in modules else "__init__"
    return None


def _imports(tree: ast.AST, modules: set[str]) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _target(alias.name, modules)
                if target is not None:
                    yield target
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                raise AssertionError("the package has no subpackage: no '..' import expected")
            module = node.module or ""
            if node.level == 1 and module:  # from .x import y
                yield module.split(".")[0]
            elif node.level == 1 or module == PACKAGE:
                # ``from . import x``: a module, or a name of the package root.
                for alias in node.names:
                    yield alias.name if alias.name in modules else "__init__"
            else:
                target = _target(module, modules)
                if target is not None:
                    yield target
        elif isinstance(node, ast.Call):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else None
            if isinstance(function, ast.Name):
                name = function.id
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    value = first.value
                    if value.startswith("."):
                        value = PACKAGE + value
                    target = _target(value, modules)
                    if target is not None:
                        yield target


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """Module -> the package modules it imports (itself excluded)."""
    modules = _modules(source)
    graph: dict[str, set[str]] = {}
    for module in sorted(modules):
        tree = ast.parse((source / f"{module}.py").read_text(), filename=f"{module}.py")
        graph[module] = {m for m in _imports(tree, modules) if m != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once, from its first node)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append([*cycle, nxt])
            elif len(path) < len(graph):
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module of the same or a higher layer, and of one ``ONLY`` forbids."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _layer(target) >= _layer(module):
                found.append(
                    f"{module} ({LAYERS[_layer(module)][0]}) imports "
                    f"{target} ({LAYERS[_layer(target)][0]})"
                )
            elif module in ONLY and target not in ONLY[module]:
                found.append(f"{module} may import leaves only, imports {target}")
    return found


def test_every_module_has_a_layer() -> None:
    for module in _modules(SOURCE):
        _layer(module)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The parser itself: each spelling of an import is an edge, other packages are not."""
    (tmp_path / "a.py").write_text(
        "import importlib\n"
        "import os\n"
        "from . import b\n"
        "from .c import thing\n"
        "from django_sent_otel import d\n"
        "from django_sent_otel.e import other\n"
        "import django_sent_otel.f\n"
        "from . import something_of_the_root\n"
        "def late():\n"
        "    from .g import x\n"
        "    importlib.import_module('django_sent_otel.h')\n"
    )
    for name in "bcdefgh":
        (tmp_path / f"{name}.py").write_text("")
    (tmp_path / "__init__.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph["a"] == {"b", "c", "d", "e", "f", "g", "h", "__init__"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_package_imports_have_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_package_imports_run_down_the_layers() -> None:
    assert violations(import_graph()) == []


def test_no_module_imports_the_package_root() -> None:
    graph = import_graph()
    assert [m for m, targets in sorted(graph.items()) if "__init__" in targets] == []
