"""Graph / Node data model: stable ids, module tree, collapse."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Default budget of visible nodes for the automatic (collapsed) view.
DEFAULT_MAX_VISIBLE = 150


@dataclass(slots=True)
class SavedTensor:
    """A tensor autograd keeps for backward (recorded before backward frees it)."""

    attr: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass(slots=True)
class Node:
    """One node of a captured autograd graph.

    Attributes
    ----------
    id : str
        Stable id built from structure, never from ``id()``: ``"{module}/{op}#{k}"`` (the
        k-th such op in that module, forward order), ``"leaf:{name}"`` / ``"leaf#{k}"``,
        ``"output:{name}"`` / ``"output#{i}"``, ``"{op id}/saved:{attr}"``. Identical
        forward passes give identical ids.
    kind : {"op", "leaf", "output", "saved"}
        Every autograd node reachable from the outputs is one ``"op"``, except
        ``AccumulateGrad``, drawn as its ``"leaf"`` tensor. ``"saved"`` nodes (one per
        tensor an op keeps for backward, edge to that op) exist only when asked for with
        ``capture(..., saved=True)`` / ``rec.graph_of(..., saved=True)``.
    label : str
        Short text shown in the graph.
    op : str or None
        Autograd node name (``MulBackward0``); None for non-op nodes.
    shape, dtype
        Of the tensor the node stands for. For an op, its first forward output, read from
        the autograd node itself, so post-hoc captures know it too (a multi-output op's
        label says ``+N``).
    module : str or None
        Dotted module path that produced the op (recorded captures) or owns the parameter.
    source : str or None
        ``"file.py:LINE"`` of the user code that ran the op (recorded captures only).
    name : str or None
        Parameter/variable name for leaves and outputs; attribute name for saved tensors.
    saved : list of SavedTensor
        Tensors this op keeps for backward (empty for other kinds: a saved node's bytes
        are counted on its op only).
    index : int
        Position in forward (topological) order; also the DOT node name ``n{index}``.
    """

    id: str
    kind: str
    label: str
    index: int
    op: str | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    module: str | None = None
    source: str | None = None
    name: str | None = None
    saved: list[SavedTensor] = field(default_factory=list)
    base_shape: tuple[int, ...] | None = None

    @property
    def saved_bytes(self) -> int:
        """Bytes of the tensors this node keeps for backward."""
        return sum(s.nbytes for s in self.saved)

    def __repr__(self) -> str:
        return f"Node({self.id!r}, kind={self.kind!r})"


@dataclass
class ModuleInfo:
    """A module seen while recording: dotted path and class name."""

    path: str
    type: str

    @property
    def depth(self) -> int:
        return self.path.count(".") + 1


_shape_texts: dict[tuple[int, ...], str] = {}


def shape_text(shape: Iterable[int]) -> str:
    """``(2, 3)`` -> ``"(2, 3)"``; ``(4,)`` -> ``"(4)"`` (memoised: shapes repeat a lot)."""
    key = tuple(shape)
    text = _shape_texts.get(key)
    if text is None:
        text = "(" + ", ".join(map(str, key)) + ")"
        if len(_shape_texts) < 100_000:
            _shape_texts[key] = text
    return text


@functools.lru_cache(maxsize=65536)
def module_ancestors(path: str) -> tuple[str, ...]:
    """``"a.b.c"`` -> ``("a", "a.b", "a.b.c")`` (memoised: called per node per view)."""
    parts = path.split(".")
    return tuple(".".join(parts[: i + 1]) for i in range(len(parts)))


def collapsed_unit(path: str | None, opened: set[str]) -> str | None:
    """Outermost closed module among ``path`` and its ancestors (None: all open)."""
    if not path:
        return None
    if path in opened:  # an open module's ancestors are open too
        return None
    for anc in module_ancestors(path):
        if anc not in opened:
            return anc
    return None  # pragma: no cover - unreachable: path itself is not open


class Graph:
    """A captured autograd graph.

    Build one with :func:`gradwidget.capture` or :func:`gradwidget.record`.

    Attributes
    ----------
    nodes : list of Node
        In forward (topological) order.
    edges : list of (str, str)
        ``(src_id, dst_id)`` in the forward direction (inputs -> op -> output).
    modules : dict of str to ModuleInfo
        Modules seen while recording, by dotted path.
    saved_bytes : int
        Bytes held for backward by the whole graph (each storage counted once).
    """

    def __init__(
        self,
        nodes: list[Node],
        edges: list[tuple[str, str]],
        modules: dict[str, ModuleInfo] | None = None,
        saved_bytes: int = 0,
    ):
        self.nodes = nodes
        self.edges = edges
        self.modules = dict(modules or {})
        self.saved_bytes = saved_bytes
        self._by_id = {n.id: n for n in nodes}
        # Nodes per module path (None: top level): views are computed per path, not per node.
        self._per_module: dict[str | None, int] = {}
        for n in nodes:
            self._per_module[n.module] = self._per_module.get(n.module, 0) + 1
        # Every module path a node sits in, including parents of recorded ones.
        for path in self._per_module:
            if path:
                for anc in module_ancestors(path):
                    self.modules.setdefault(anc, ModuleInfo(anc, "Module"))

    def __getitem__(self, node_id: str) -> Node:
        return self._by_id[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for n in self.nodes:
            kinds[n.kind] = kinds.get(n.kind, 0) + 1
        parts = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        return f"<gradwidget.Graph: {parts}, {len(self.edges)} edges, {len(self.modules)} modules>"

    def of_kind(self, kind: str) -> list[Node]:
        """The nodes of one kind, in forward order."""
        return [n for n in self.nodes if n.kind == kind]

    def module_totals(self) -> dict[str, dict[str, int]]:
        """Per module path: ops, params and saved bytes of everything nested inside it.

        What a collapsed module box shows, and what the browser shows on hover: one count.
        """
        totals = self.__dict__.get("_module_totals")
        if totals is None:
            totals = {p: {"ops": 0, "params": 0, "saved_bytes": 0} for p in self.modules}
            for n in self.nodes:
                if not n.module:
                    continue
                for anc in module_ancestors(n.module):
                    row = totals.get(anc)
                    if row is not None:
                        row["ops"] += n.kind == "op"
                        row["params"] += n.kind == "leaf"
                        row["saved_bytes"] += n.saved_bytes
            self.__dict__["_module_totals"] = totals
        return totals

    def use_rank(self) -> dict[str, int]:
        """Position of each node in the order the forward pass used it.

        Ops and outputs rank by their own index; a leaf ranks by its first consumer, so the
        parameters of an ``nn.Sequential`` come out layer by layer (``0.weight``,
        ``0.bias``, ``2.weight``, ...) although the walk meets each bias before its weight.
        """
        index = {n.id: n.index for n in self.nodes}
        rank = {n.id: n.index for n in self.nodes if n.kind != "leaf"}
        for src, dst in self.edges:
            if self[src].kind == "leaf":
                rank[src] = min(rank.get(src, index[dst]), index[dst])
        for n in self.nodes:
            rank.setdefault(n.id, n.index)
        return rank

    # ---- collapsing -------------------------------------------------------------------
    @property
    def max_depth(self) -> int:
        """Deepest module nesting level (0 when no module was recorded)."""
        return max((m.depth for m in self.modules.values()), default=0)

    def open_modules(self, depth: int | None = None, expand: Iterable[str] = ()) -> set[str]:
        """Module paths shown open (as clusters) for a view.

        A module is open when its level is at most ``depth`` or it is listed in ``expand``
        (its ancestors then open too). ``depth=None`` picks the deepest level whose view
        keeps at most ``DEFAULT_MAX_VISIBLE`` visible nodes, collapsing deepest first.
        """
        if isinstance(expand, str):  # one path, not its characters
            expand = (expand,)
        if depth is None:
            depth = self.auto_depth()
        opened = {p for p, m in self.modules.items() if m.depth <= depth}
        for path in expand:
            if path in self.modules:
                opened.update(module_ancestors(path))
        return opened

    def auto_depth(self, max_visible: int = DEFAULT_MAX_VISIBLE) -> int:
        """Deepest module level whose collapsed view keeps ``max_visible`` nodes or fewer."""
        best = 0
        for depth in range(0, self.max_depth + 1):
            if self.visible_count(self.open_modules(depth)) <= max_visible:
                best = depth
            else:
                break
        return best

    def unit_of(self, node: Node, opened: set[str]) -> str | None:
        """The collapsed module a node is drawn inside, or None if drawn itself."""
        return collapsed_unit(node.module, opened)

    def visible_count(self, opened: set[str]) -> int:
        """How many boxes a view draws: shown nodes plus one per collapsed module."""
        count = 0
        boxes: set[str] = set()
        for path, n in self._per_module.items():
            unit = collapsed_unit(path, opened)
            if unit is None:
                count += n
            else:
                boxes.add(unit)
        return count + len(boxes)

    # ---- output -----------------------------------------------------------------------
    # _dot/_widget imported upward, inside the methods: the data model loads without them.
    def to_dot(self, depth: int | None = None, expand: Iterable[str] = ()) -> Any:
        """The DOT of a view, as a ``graphviz.Digraph`` (see :func:`gradwidget._dot.to_dot`)."""
        from ._dot import to_dot

        return to_dot(self, depth=depth, expand=expand)

    def to_svg(self, depth: int | None = None, expand: Iterable[str] = ()) -> str:
        """SVG text rendered by the system ``dot`` (raises a clear error without it)."""
        from ._dot import render

        return render(self.to_dot(depth, expand), "svg").decode("utf-8")

    def save(self, path: str, depth: int | None = None, expand: Iterable[str] = ()) -> str:
        """Write the graph to ``path``: ``.dot`` (no Graphviz needed), ``.svg`` or ``.png``."""
        from ._dot import render

        ext = os.path.splitext(str(path))[1].lower().lstrip(".")
        dot = self.to_dot(depth, expand)
        if ext in ("dot", "gv"):
            data = dot.source.encode("utf-8")
        elif ext in ("svg", "png", "pdf"):
            data = render(dot, ext)
        else:
            raise ValueError(f"Cannot save as {ext!r}: use a .dot, .svg, .png or .pdf path.")
        with open(path, "wb") as f:
            f.write(data)
        return str(path)

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Show as the interactive widget in Jupyter (text repr elsewhere)."""
        try:
            from ._widget import GradWidget
        except ImportError:  # pragma: no cover - front-end not built
            return {"text/plain": repr(self)}
        return GradWidget(self)._repr_mimebundle_(include=include, exclude=exclude)
