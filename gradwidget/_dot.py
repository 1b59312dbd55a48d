"""Graph -> graphviz.Digraph: the one place DOT is built (escaping, styles, collapse)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass

import graphviz

from ._graph import Graph, Node, module_ancestors

# Colorblind-safe fills (Okabe-Ito tints); the browser restyles them per theme.
STYLE = {
    "leaf": {"shape": "box", "style": "filled,rounded", "fillcolor": "#cfe6f5"},
    "op": {"shape": "box", "style": "filled", "fillcolor": "#eeeeee"},
    "output": {"shape": "box", "style": "filled,rounded,bold", "fillcolor": "#c9ead8"},
    "saved": {"shape": "box", "style": "filled,dashed", "fillcolor": "#fbe3c4"},
    "module": {"shape": "box3d", "style": "filled", "fillcolor": "#fff4cc"},
}
GRAPH_ATTRS = {"rankdir": "TB", "fontname": "Helvetica", "fontsize": "10", "nodesep": "0.25"}
NODE_ATTRS = {"fontname": "Helvetica", "fontsize": "10", "height": "0.3", "margin": "0.08,0.04"}


def text(value: object) -> graphviz.quoting.NoHtml:
    """Escape any user-controlled string for a quoted DOT attribute.

    Backslashes and quotes are escaped (so ``\\N``, ``"`` or ``->`` stay literal), line
    breaks become DOT ``\\n``, other control characters are dropped, and the value is never
    read as an HTML-like label (so ``<script>`` stays text).
    """
    s = str(value).replace("\\", "\\\\").replace('"', '\\"')
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    s = "".join(ch for ch in s if ch >= " " or ch == "\t")
    return graphviz.nohtml(s)


def human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KB"``."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def tooltip(node: Node) -> str:
    """One-line description, also used by the static SVG's hover text."""
    parts = [node.kind]
    if node.op:
        parts.append(node.op)
    if node.name:
        parts.append(node.name)
    if node.shape is not None:
        parts.append("(" + ", ".join(map(str, node.shape)) + ")")
    if node.dtype:
        parts.append(node.dtype)
    if node.module:
        parts.append(f"in {node.module}")
    if node.source:
        parts.append(f"at {node.source}")
    if node.saved:
        parts.append(f"saves {human_bytes(node.saved_bytes)} for backward")
    return " | ".join(parts)


@dataclass
class View:
    """Which units one DOT view draws: every node is either itself or a collapsed module."""

    opened: set[str]
    unit: dict[str, str]  # node id -> dot name of what draws it
    modules: dict[str, str]  # collapsed module path -> dot name


def view_of(graph: Graph, depth: int | None = None, expand: Iterable[str] = ()) -> View:
    """Resolve ``depth``/``expand`` into the units a view draws."""
    opened = graph.open_modules(depth, expand)
    unit: dict[str, str] = {}
    modules: dict[str, str] = {}
    for n in graph.nodes:
        collapsed = graph.unit_of(n, opened)
        if collapsed is None:
            unit[n.id] = f"n{n.index}"
        else:
            if collapsed not in modules:
                modules[collapsed] = f"m{len(modules)}"
            unit[n.id] = modules[collapsed]
    return View(opened, unit, modules)


def to_dot(graph: Graph, depth: int | None = None, expand: Iterable[str] = ()) -> graphviz.Digraph:
    """Build the DOT for a view of ``graph``.

    Parameters
    ----------
    depth : int, optional
        Modules nested deeper than this are drawn as one box each. None picks the deepest
        level that keeps the view at about 150 visible nodes.
    expand : iterable of str
        Module paths drawn open whatever ``depth`` says.
    """
    view = view_of(graph, depth, expand)
    dot = graphviz.Digraph("autograd", graph_attr=GRAPH_ATTRS, node_attr=NODE_ATTRS)

    # Group what each cluster (open module) contains; None is the top level.
    members: dict[str | None, list[str]] = {}
    children: dict[str | None, list[str]] = {}

    def parent_open(path: str | None) -> str | None:
        """Innermost open module that contains ``path`` (a node's module)."""
        if not path:
            return None
        inner = None
        for anc in module_ancestors(path):
            if anc in view.opened:
                inner = anc
            else:
                break
        return inner

    for path in sorted(view.opened, key=lambda p: (p.count("."), p)):
        parent = path.rsplit(".", 1)[0] if "." in path else None
        children.setdefault(parent, []).append(path)

    lines: dict[str, str] = {}
    counts: dict[str, list[Node]] = {}
    for n in graph.nodes:
        u = view.unit[n.id]
        if u.startswith("m"):
            counts.setdefault(u, []).append(n)
            continue
        members.setdefault(parent_open(n.module), []).append(u)
        lines[u] = n.id
    by_name = {f"n{n.index}": n for n in graph.nodes}

    for path, name in view.modules.items():
        parent = path.rsplit(".", 1)[0] if "." in path else None
        members.setdefault(parent, []).append(name)

    def emit(g: graphviz.Digraph, scope: str | None) -> None:
        for name in members.get(scope, []):
            if name.startswith("n"):
                node = by_name[name]
                g.node(
                    name,
                    label=text(node.label),
                    tooltip=text(tooltip(node)),
                    **{"class": f"gw-{node.kind}"},
                    **STYLE[node.kind],
                )
            else:
                _module_box(g, graph, name, view, counts[name])
        for path in children.get(scope, []):
            idx = sorted(view.opened).index(path)
            with g.subgraph(name=f"cluster_{idx}") as sub:
                info = graph.modules.get(path)
                label = f"{path.rsplit('.', 1)[-1]}: {info.type if info else 'Module'}"
                sub.attr(
                    label=text(label),
                    tooltip=text(path),
                    style="rounded,dashed",
                    color="#999999",
                    fontsize="9",
                    **{"class": "gw-cluster"},
                )
                emit(sub, path)

    emit(dot, None)

    seen: set[tuple[str, str]] = set()
    for src, dst in graph.edges:
        a, b = view.unit[src], view.unit[dst]
        if a != b and (a, b) not in seen:
            seen.add((a, b))
            dot.edge(a, b)
    return dot


def _module_box(g, graph: Graph, name: str, view: View, nodes: list[Node]) -> None:
    path = next(p for p, n in view.modules.items() if n == name)
    info = graph.modules.get(path)
    ops = sum(1 for n in nodes if n.kind == "op")
    params = sum(1 for n in nodes if n.kind == "leaf")
    saved = sum(n.saved_bytes for n in nodes)
    label = f"{path} ({info.type if info else 'Module'})\n{ops} ops"
    if params:
        label += f", {params} params"
    if saved:
        label += f"\n{human_bytes(saved)} saved"
    g.node(
        name,
        label=text(label),
        tooltip=text(f"module {path}: click to expand"),
        **{"class": "gw-module"},
        **STYLE["module"],
    )


# ---- static export ------------------------------------------------------------------------
def require_dot() -> None:
    """Raise a clear error when the Graphviz ``dot`` program is missing."""
    if shutil.which("dot") is None:
        raise RuntimeError(
            "Static export needs the Graphviz 'dot' program, which is not installed. "
            "Install it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
            "conda: conda install graphviz), or save as .dot, or display the graph in Jupyter "
            "with gradwidget.show(), which renders in the browser and needs no 'dot'."
        )


def render(dot: graphviz.Digraph, fmt: str) -> bytes:
    """Run ``dot`` on the DOT text and return the output bytes (svg, png, ...)."""
    require_dot()
    return dot.pipe(format=fmt)
