"""The package's shape: what loads what, no import cycles, no oversized files."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gradwidget

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gradwidget"
MAX_LINES = 450


def test_graph_model_loads_without_widget_stack():
    code = (
        "import sys, gradwidget._graph\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'anywidget', 'graphviz'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_lazy_exports_match_all():
    assert sorted(gradwidget._EXPORTS) == sorted(gradwidget.__all__)
    for name in gradwidget.__all__:
        assert getattr(gradwidget, name).__name__ == name
    assert set(gradwidget.__all__) <= set(dir(gradwidget))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module loads: not in functions, not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs later, when called: may import upward
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)  # the body never runs
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def _imported_modules(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """Which of the package's ``modules`` (``"_graph"``, ``"__init__"``) ``node`` loads."""
    if isinstance(node, ast.Import):
        names = [a.name.split(".") for a in node.names if a.name.split(".")[0] == "gradwidget"]
        return {n[1] if len(n) > 1 else "__init__" for n in names} & (modules | {"__init__"})
    if node.level == 0 and not (node.module or "").startswith("gradwidget"):
        return set()
    if node.level > 1:
        return set()  # nothing above the package
    parts = (node.module or "").split(".")
    inner = parts[1:] if node.level == 0 else [p for p in parts if p]
    if inner:
        return {inner[0]} & modules
    # ``from . import _lint``: a module when one has that name, else the package's own.
    return {a.name if a.name in modules else "__init__" for a in node.names}


def _import_graph() -> dict[str, set[str]]:
    files = {p.stem: p for p in PACKAGE.glob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        deps: set[str] = set()
        for node in _module_level_imports(tree):
            deps |= _imported_modules(node, modules)
        graph[name] = deps - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_import_graph_sees_layers():
    graph = _import_graph()
    assert "_graph" in graph["_capture"]
    assert {"_autograd", "_names", "_record"} <= graph["_capture"]
    assert "_capture" not in graph["_record"]  # record.graph imports it inside a method
    assert not {"_dot", "_widget"} & graph["_graph"]


def test_no_import_cycle():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_file_over_limit():
    files = sorted(PACKAGE.rglob("*.py")) + sorted(
        p for p in (ROOT / "js" / "src").rglob("*") if p.is_file()
    )
    too_long = {}
    for path in files:
        with path.open(encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            too_long[str(path.relative_to(ROOT))] = n
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"
