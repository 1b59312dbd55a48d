"""Graph -> graphviz.Digraph: the one place DOT is built (escaping, styles, collapse).

The DOT statements are formatted here directly (one escaping function, attribute strings
prepared once per node kind) and handed to ``graphviz.Digraph`` as its body: the
``graphviz`` package's per-attribute quoting cost more than the whole capture on big
graphs. DOT node names are ``n{index}`` (row ``index`` of the wire node table) and
``m{k}`` for collapsed modules; clusters are ``cluster_{k}``. User-controlled text only
ever appears inside quoted attribute values.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

import graphviz

from ._graph import Graph, Node, collapsed_unit, module_ancestors, shape_text

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
CLUSTER_ATTRS = {"style": "rounded,dashed", "color": "#999999", "fontsize": "9"}

# C0 controls except tab and newline, and DEL: dropped from labels.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
# Text whose only special characters are line breaks (the common case for labels).
_PLAIN = re.compile('[^\\\\"\x00-\x09\x0b-\x1f\x7f]*')


def escape(value: object) -> str:
    """Escape any string for the inside of a quoted DOT attribute value.

    Backslashes and quotes are escaped (so ``\\N``, ``"``, ``->``, ``}`` or a trailing
    ``\\`` stay literal), line breaks become DOT ``\\n``, other control characters are
    dropped. Values are always written quoted, never as HTML-like labels, so ``<script>``
    stays text (``dot`` writes it as ``&lt;script&gt;`` in SVG).
    """
    s = str(value)
    if _PLAIN.fullmatch(s) is not None:
        return s.replace("\n", "\\n")
    s = s.replace("\\", "\\\\").replace('"', '\\"')
    if "\r" in s:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    if _CONTROL.search(s) is not None:
        s = _CONTROL.sub("", s)
    return s.replace("\n", "\\n")


def quote(value: object) -> str:
    """``value`` as a quoted DOT string (see :func:`escape`)."""
    s = str(value)
    if _PLAIN.fullmatch(s) is not None:  # fast path, same result as escape()
        return '"' + s.replace("\n", "\\n") + '"'
    return '"' + escape(s) + '"'


def _attrs(attrs: dict[str, str]) -> str:
    return " ".join(f"{k}={quote(v)}" for k, v in attrs.items())


# Per kind: the constant part of a node statement.
_KIND_ATTRS = {kind: f'{_attrs(style)} class="gw-{kind}"' for kind, style in STYLE.items()}
_CLUSTER_ATTRS = _attrs(CLUSTER_ATTRS) + ' class="gw-cluster"'
# Graph-wide defaults, formatted once (the graphviz package would re-quote them per .source).
_HEAD = [f"\tgraph [{_attrs(GRAPH_ATTRS)}]\n", f"\tnode [{_attrs(NODE_ATTRS)}]\n"]


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
        parts.append(shape_text(node.shape))
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

    @property
    def visible(self) -> int:
        """Number of boxes the view draws."""
        return len(set(self.unit.values()))


def view_of(graph: Graph, depth: int | None = None, expand: Iterable[str] = ()) -> View:
    """Resolve ``depth``/``expand`` into the units a view draws."""
    opened = graph.open_modules(depth, expand)
    unit: dict[str, str] = {}
    modules: dict[str, str] = {}
    units_by_path: dict[str | None, str | None] = {}
    for n in graph.nodes:
        path = n.module
        try:
            collapsed = units_by_path[path]
        except KeyError:
            collapsed = units_by_path[path] = collapsed_unit(path, opened)
        if collapsed is None:
            unit[n.id] = f"n{n.index}"
        else:
            name = modules.get(collapsed)
            if name is None:
                name = modules[collapsed] = f"m{len(modules)}"
            unit[n.id] = name
    return View(opened, unit, modules)


def to_dot(
    graph: Graph,
    depth: int | None = None,
    expand: Iterable[str] = (),
    *,
    view: View | None = None,
) -> graphviz.Digraph:
    """Build the DOT for a view of ``graph``.

    Parameters
    ----------
    depth : int, optional
        Modules nested deeper than this are drawn as one box each. None picks the deepest
        level that keeps the view at about 150 visible nodes.
    expand : iterable of str
        Module paths drawn open whatever ``depth`` says.
    view : View, optional
        A view already resolved by :func:`view_of` (then ``depth``/``expand`` are ignored).
    """
    if view is None:
        view = view_of(graph, depth, expand)
    opened = view.opened

    # What each scope (open module, None = top level) draws, in forward order.
    members: dict[str | None, list[str]] = {}
    inner_open: dict[str | None, str | None] = {None: None}

    def scope_of(path: str | None) -> str | None:
        """Innermost open module containing ``path`` (memoised per path)."""
        try:
            return inner_open[path]
        except KeyError:
            pass
        inner = None
        for anc in module_ancestors(path):
            if anc not in opened:
                break
            inner = anc
        inner_open[path] = inner
        return inner

    by_path: dict[str | None, list[str]] = {}  # node module path -> its scope's list
    unit = view.unit
    for n in graph.nodes:
        u = unit[n.id]
        if u[0] == "m":
            continue  # drawn once, as its module's box
        dest = by_path.get(n.module)
        if dest is None:
            dest = by_path[n.module] = members.setdefault(scope_of(n.module), [])
        dest.append(
            f"{u} [label={quote(n.label)} tooltip={quote(tooltip(n))} {_KIND_ATTRS[n.kind]}]\n"
        )
    for path, name in view.modules.items():
        parent = path.rsplit(".", 1)[0] if "." in path else None
        members.setdefault(parent, []).append(_module_box(graph, path, name))

    # Open modules, parents before children; cluster numbers follow sorted paths.
    children: dict[str | None, list[tuple[int, str]]] = {}
    for k, path in enumerate(sorted(opened)):
        parent = path.rsplit(".", 1)[0] if "." in path else None
        children.setdefault(parent, []).append((k, path))

    body: list[str] = list(_HEAD)
    # Explicit stack instead of recursion: module nesting depth is unbounded in principle.
    # Items: (path, cluster number, level) opens a scope; (None, -1, level) closes one.
    stack: list[tuple[str | None, int, int]] = [(None, 0, 0)]
    while stack:
        scope, k, level = stack.pop()
        outer = "\t" * level
        if k < 0:
            body.append(outer + "}\n")
            continue
        indent = outer + "\t"
        if scope is not None:
            info = graph.modules.get(scope)
            label = f"{scope.rsplit('.', 1)[-1]}: {info.type if info else 'Module'}"
            body.append(f"{outer}subgraph cluster_{k} {{\n")
            body.append(f"{indent}label={quote(label)} tooltip={quote(scope)} {_CLUSTER_ATTRS}\n")
            stack.append((None, -1, level))
        body.extend(indent + line for line in members.get(scope, ()))
        for ck, child in reversed(children.get(scope, ())):
            stack.append((child, ck, level + 1))

    seen: set[tuple[str, str]] = set()
    for src, dst in graph.edges:
        a, b = unit[src], unit[dst]
        if a != b and (a, b) not in seen:
            seen.add((a, b))
            body.append(f"\t{a} -> {b}\n")
    return graphviz.Digraph("autograd", body=body)


def _module_box(graph: Graph, path: str, name: str) -> str:
    info = graph.modules.get(path)
    totals = graph.module_totals()[path]
    ops, params, saved = totals["ops"], totals["params"], totals["saved_bytes"]
    label = f"{path} ({info.type if info else 'Module'})\n{ops} ops"
    if params:
        label += f", {params} params"
    if saved:
        label += f"\n{human_bytes(saved)} saved"
    return (
        f"{name} [label={quote(label)} tooltip={quote(f'module {path}: click to expand')} "
        f"{_KIND_ATTRS['module']}]\n"
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
