"""The graph view part of GradWidget: the drawn graph, selection, expansion, static picture."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from typing import Any

import anywidget
import graphviz
import traitlets

from ._constants import MAX_VISIBLE_NODES
from ._dot import render, to_dot, view_of
from ._graph import Graph
from ._search import search
from ._wire import PACKED, module_table, node_table

#: Views with more boxes than this get no static picture (``dot`` time and SVG size grow).
STATIC_FALLBACK_MAX_UNITS = 300
SVG_MIME = "image/svg+xml"
_SVG_CLUTTER = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<!--.*?-->\n?", re.S)


class GraphView(traitlets.HasTraits):
    """Traits and logic of the graph pane; a part of :class:`~gradwidget.GradWidget`.

    The composing widget sets ``self.graph`` and ``self.static_fallback`` before its traits
    are initialised from :func:`graph_state`.
    """

    graph: Graph
    static_fallback: bool

    loader = anywidget.WidgetTrait().tag(sync=True)
    loader.help = "The page-once loader widget that ships Graphviz and the front-end."
    title = traitlets.Unicode("", help="Text shown above the graph.").tag(sync=True)
    # dot/nodes/modules are packed on the wire (_wire.PACKED); read them in JS with
    # dotText/nodeTable/moduleTable from js/src/wire.js.
    dot = traitlets.Unicode("", help="DOT text of the current view.").tag(sync=True, **PACKED)
    view_modules = traitlets.Dict(help="DOT name -> module path of each collapsed box.").tag(
        sync=True
    )
    view_error = traitlets.Unicode("", help="Why the view is not drawn (too big).").tag(sync=True)
    nodes = traitlets.Dict(help="Column table of every node (_wire.node_table).").tag(
        sync=True, **PACKED
    )
    modules = traitlets.Dict(help="Per-module totals (_wire.module_table).").tag(
        sync=True, **PACKED
    )
    saved_bytes = traitlets.Int(0, help="Bytes saved for backward in all.").tag(sync=True)
    max_depth = traitlets.Int(0, help="Deepest module nesting level.").tag(sync=True)
    selected = traitlets.Unicode("", help="Id of the selected node ('' for none).").tag(sync=True)
    expanded = traitlets.List(
        traitlets.Unicode(), help="Module paths opened beyond ``depth``."
    ).tag(sync=True)
    depth = traitlets.Int(
        None, allow_none=True, help="Module nesting level shown open (None: ~150 nodes)."
    ).tag(sync=True)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        include, exclude = kwargs.get("include"), kwargs.get("exclude")
        wanted = (not include or SVG_MIME in include) and not (exclude and SVG_MIME in exclude)
        if self.static_fallback and wanted and isinstance(data, dict):
            svg = self._static_picture()
            if svg:
                data[SVG_MIME] = svg
        return bundle

    def _static_picture(self) -> str | None:
        """SVG of the current view by the system ``dot``, or None when that is not cheap."""
        if not len(self.graph):
            # Nothing drawn yet (a callback draws later): say so instead of a blank picture.
            text = html.escape(self.title or "No graph yet.")
            return (
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{8 * len(text) + 16}" '
                f'height="32"><text x="8" y="20" font-family="Helvetica,sans-serif" '
                f'font-size="13" fill="#555">{text}</text></svg>'
            )
        if not self.dot or shutil.which("dot") is None:
            return None
        cached = getattr(self, "_static_svg", ("", None))
        if cached[0] != self.dot:
            svg = None
            units = len(set(view_of(self.graph, self.depth, self.expanded).unit.values()))
            if units <= STATIC_FALLBACK_MAX_UNITS:
                try:
                    svg = render(graphviz.Source(self.dot), "svg").decode("utf-8")
                    # No XML prolog or comments (Graphviz version, node names): smaller, and
                    # the same on every machine, so saved outputs do not churn.
                    svg = _SVG_CLUTTER.sub("", svg).strip()
                except (RuntimeError, OSError, ValueError, subprocess.CalledProcessError):
                    # The picture is optional (bad DOT, dot failing): the widget stays.
                    svg = None
            cached = self._static_svg = (self.dot, svg)
        return cached[1]

    def search(self, query: str) -> list[str]:
        """Ids of the nodes whose name, label, op, module path or shape contains ``query``
        (case-insensitive), in forward order: what the search box (Ctrl/⌘+F) steps through.
        """
        return search(self.graph, query)

    @traitlets.observe("expanded", "depth")
    def _on_view_change(self, change: dict) -> None:
        # One message, view_modules with the dot: the front-end maps DOT names on redraw.
        with self.hold_sync():  # type: ignore[attr-defined]
            for name, value in view_state(self.graph, self.depth, self.expanded).items():
                setattr(self, name, value)

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict) -> str:
        value = proposal["value"]
        if value and value not in self.graph:
            raise traitlets.TraitError(f"No node with id {value!r} in this graph.")
        return value


def graph_state(graph: Graph, depth: int | None, expanded: Any) -> dict[str, Any]:
    """Initial trait values of the graph view (everything goes into one comm_open)."""
    return {
        "depth": depth,
        "nodes": node_table(graph),
        "modules": module_table(graph),
        "saved_bytes": graph.saved_bytes,
        "max_depth": graph.max_depth,
        **view_state(graph, depth, expanded),
    }


def view_state(graph: Graph, depth: int | None, expanded: Any) -> dict[str, Any]:
    """Trait values of one view: DOT (or the over-the-limit message) and its module boxes."""
    view = view_of(graph, depth, expanded)
    visible = len(set(view.unit.values()))
    state: dict[str, Any] = {
        "view_modules": {name: path for path, name in view.modules.items()},
        "view_error": "",
        "dot": "",
    }
    if visible > MAX_VISIBLE_NODES:
        advice = (
            "Collapse modules or lower the depth to see it."
            if graph.modules
            else "It has no modules to collapse: draw a smaller part (e.g. capture an "
            "intermediate tensor), or record the forward pass of an nn.Module "
            "(GradWidget(model, example_input=x)) so the graph can be grouped by module. "
            "Graph.save('graph.dot') still writes all of it."
        )
        state["view_error"] = (
            f"This view has {visible:,} nodes, over the limit of {MAX_VISIBLE_NODES:,} "
            f"that the browser can lay out without freezing. {advice}"
        )
    else:
        state["dot"] = to_dot(graph, view=view).source  # the view resolved above, not again
    return state
