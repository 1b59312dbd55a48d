"""Wire formats: the only module that decides how data crosses to the browser."""

from __future__ import annotations

from typing import Any

from ._graph import Graph, module_ancestors

#: Node columns sent to the browser, in this order.
NODE_COLUMNS = (
    "id",
    "kind",
    "label",
    "op",
    "shape",
    "dtype",
    "module",
    "source",
    "name",
    "saved_bytes",
)


def node_table(graph: Graph) -> dict[str, list[Any]]:
    """Column-oriented node table (compact JSON); row ``i`` is DOT node ``n{i}``."""
    cols: dict[str, list[Any]] = {c: [] for c in NODE_COLUMNS}
    for n in graph.nodes:
        cols["id"].append(n.id)
        cols["kind"].append(n.kind)
        cols["label"].append(n.label)
        cols["op"].append(n.op)
        cols["shape"].append(list(n.shape) if n.shape is not None else None)
        cols["dtype"].append(n.dtype)
        cols["module"].append(n.module)
        cols["source"].append(n.source)
        cols["name"].append(n.name)
        cols["saved_bytes"].append(n.saved_bytes)
    return cols


def module_table(graph: Graph) -> dict[str, dict[str, Any]]:
    """Per module path: class name, op/param counts and saved bytes (for hover)."""
    out: dict[str, dict[str, Any]] = {
        p: {"type": m.type, "ops": 0, "params": 0, "saved_bytes": 0}
        for p, m in graph.modules.items()
    }
    for n in graph.nodes:
        if not n.module:
            continue
        for anc in module_ancestors(n.module):
            row = out.get(anc)
            if row is None:
                continue
            row["ops"] += n.kind == "op"
            row["params"] += n.kind == "leaf"
            row["saved_bytes"] += n.saved_bytes
    return out
