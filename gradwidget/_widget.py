"""The AnyWidget classes: traits and the wiring between capture, DOT and the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import torch
import traitlets

from ._capture import capture, record
from ._dot import view_of
from ._graph import Graph
from ._loader import get_loader
from ._wire import module_table, node_table

STATIC = Path(__file__).parent / "static"

#: Views with more visible nodes than this are not laid out (the tab would freeze).
MAX_VISIBLE_NODES = 20_000


def graph_from(source: Any, example_input: Any = None) -> tuple[Graph, torch.nn.Module | None]:
    """Build the Graph a widget shows from a Graph, an output tensor or a module."""
    if isinstance(source, Graph):
        return source, None
    if isinstance(source, torch.nn.Module):
        if example_input is None:
            raise ValueError(
                "To draw a module, pass example_input=... (a tensor or tuple of tensors "
                "for one forward pass), e.g. GradWidget(model, example_input=x)."
            )
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        with record(source) as rec:
            out = source(*args)
        outs = [out] if isinstance(out, torch.Tensor) else list(rec.outputs())
        return rec.graph_of(*outs), source
    if isinstance(source, torch.Tensor):
        return capture(source), None
    raise TypeError(
        "GradWidget needs a Graph, a tensor with a graph (e.g. the loss), or an nn.Module "
        f"with example_input; got {type(source).__name__}."
    )


class GradWidget(anywidget.AnyWidget):
    """Interactive autograd graph, rendered in the browser by WASM Graphviz.

    Parameters
    ----------
    source : Graph, torch.Tensor or torch.nn.Module
        What to draw. A module records one forward pass on ``example_input`` so the graph
        is clustered by module and carries source lines.
    example_input : tensor or tuple of tensors, optional
        Input for one forward pass when ``source`` is a module.
    depth : int, optional
        Module nesting level shown open; None keeps the view to ~150 nodes.
    """

    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    loader = anywidget.WidgetTrait().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    # The current view: DOT text plus which DOT names are collapsed modules.
    dot = traitlets.Unicode("").tag(sync=True)
    view_modules = traitlets.Dict().tag(sync=True)
    view_error = traitlets.Unicode("").tag(sync=True)
    nodes = traitlets.Dict().tag(sync=True)
    modules = traitlets.Dict().tag(sync=True)
    saved_bytes = traitlets.Int(0).tag(sync=True)
    max_depth = traitlets.Int(0).tag(sync=True)
    # Interaction, settable from both sides.
    selected = traitlets.Unicode("").tag(sync=True)
    expanded = traitlets.List(traitlets.Unicode()).tag(sync=True)
    depth = traitlets.Int(None, allow_none=True).tag(sync=True)

    def __init__(self, source: Any, example_input: Any = None, *, depth: int | None = None, **kw):
        graph, module = graph_from(source, example_input)
        self.graph = graph
        self.module = module
        super().__init__(loader=get_loader(), depth=depth, **kw)
        self.nodes = node_table(graph)
        self.modules = module_table(graph)
        self.saved_bytes = graph.saved_bytes
        self.max_depth = graph.max_depth
        self._update_view()

    def __repr__(self) -> str:
        return f"<gradwidget.GradWidget: {len(self.graph)} nodes, selected={self.selected!r}>"

    @traitlets.observe("expanded", "depth")
    def _on_view_change(self, change: dict) -> None:
        self._update_view()

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict) -> str:
        value = proposal["value"]
        if value and value not in self.graph:
            raise traitlets.TraitError(f"No node with id {value!r} in this graph.")
        return value

    def _update_view(self) -> None:
        view = view_of(self.graph, self.depth, self.expanded)
        visible = len(set(view.unit.values()))
        if visible > MAX_VISIBLE_NODES:
            self.view_error = (
                f"This view has {visible:,} nodes, over the limit of {MAX_VISIBLE_NODES:,} "
                "that the browser can lay out without freezing. Collapse modules or lower "
                "the depth to see it."
            )
            self.dot = ""
        else:
            self.view_error = ""
            self.dot = self.graph.to_dot(self.depth, self.expanded).source
        self.view_modules = {name: path for path, name in view.modules.items()}


def show(source: Any, **kw: Any) -> GradWidget:
    """Display ``source`` (a Graph, an output tensor or a module) as a GradWidget."""
    from IPython.display import display

    w = GradWidget(source, **kw)
    display(w)
    return w
