"""Finding nodes: the one matching rule, shared by ``w.search()`` and the page's search box.

Each node has a *haystack*: its name, label, op, module path, the module's class and its
shape, lowercased, one per line. A query matches a node when the lowercased, trimmed query
is a substring of it. Python computes the haystacks and sends them with the node table
(column ``search``); the browser only tests ``haystack.includes(query)``, so both sides
always agree.
"""

from __future__ import annotations

from ._graph import Graph, Node, shape_text


def haystack(node: Node, graph: Graph | None = None) -> str:
    """The text a query is matched against (see the module docstring)."""
    info = graph.modules.get(node.module) if graph is not None and node.module else None
    parts = [node.name, node.label, node.op, node.module, info.type if info else None]
    if node.shape is not None:
        parts.append(shape_text(node.shape))
    out: list[str] = []
    for p in parts:  # a part already contained adds no match: smaller node tables
        p = p.lower() if p else ""
        if p and not any(p in q for q in out):
            out.append(p)
    return "\n".join(out)


def normalize(query: str) -> str:
    """The query as matched: trimmed and lowercased."""
    if not isinstance(query, str):
        raise TypeError(f"search() needs a string, got {type(query).__name__}.")
    return query.strip().lower()


def search(graph: Graph, query: str) -> list[str]:
    """Ids of the nodes matching ``query``, in forward order ([] for an empty query)."""
    q = normalize(query)
    if not q:
        return []
    return [n.id for n in graph.nodes if q in haystack(n, graph)]
