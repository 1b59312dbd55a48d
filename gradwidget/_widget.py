"""GradWidget: the graph view, training controls and live gradients composed into one widget."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anywidget
import torch
from torch.utils._pytree import tree_leaves

from ._capture import capture
from ._constants import STATIC
from ._controls import TrainingControls
from ._graph import Graph
from ._live import LiveGradients, RunWatch
from ._loader import get_loader
from ._record import record
from ._targets import eager_module
from ._view import GraphView, graph_state

#: Default of ``GradWidget(static_fallback=...)``: a static SVG next to the live widget.
STATIC_FALLBACK = True


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
        # A compiled module is drawn from its eager original (the compiled graph is one
        # opaque node); training and watching still use the module as given.
        eager = eager_module(source)
        with _eager_call(eager), record(eager) as rec:
            out = eager(*args)
        # Every tensor the module returned (tuple, list, dict, nested) is one output node.
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
        if not outs:
            raise ValueError(
                f"{type(source).__name__} returned no tensor that requires grad, so there is "
                "no autograd graph to draw: do its parameters have requires_grad=False, or "
                "did it run under torch.no_grad()?"
            )
        return rec.graph_of(*outs), source
    if isinstance(source, torch.Tensor):
        return capture(source), None
    raise TypeError(
        "GradWidget needs a Graph, a tensor with a graph (e.g. the loss), or an nn.Module "
        f"with example_input; got {type(source).__name__}."
    )


@contextlib.contextmanager
def _eager_call(module: torch.nn.Module) -> Iterator[None]:
    """Run ``module`` eagerly for a moment even after ``module.compile()``."""
    compiled = getattr(module, "_compiled_call_impl", None)
    if compiled is not None:
        module._compiled_call_impl = None
    try:
        yield
    finally:
        if compiled is not None:
            module._compiled_call_impl = compiled


class GradWidget(GraphView, TrainingControls, LiveGradients, anywidget.AnyWidget):
    """Interactive autograd graph, rendered in the browser by WASM Graphviz.

    One widget (one model, one comm_open) composed of three parts: the graph view
    (:class:`~gradwidget._view.GraphView`), the training controls
    (:class:`~gradwidget._controls.TrainingControls`) and the live gradients
    (:class:`~gradwidget._live.LiveGradients`).

    Parameters
    ----------
    source : Graph, torch.Tensor or torch.nn.Module
        What to draw. A module records one forward pass on ``example_input`` so the graph
        is clustered by module and carries source lines.
    example_input : tensor or tuple of tensors, optional
        Input for one forward pass when ``source`` is a module.
    depth : int, optional
        Module nesting level shown open; None keeps the view to ~150 nodes.
    static_fallback : bool, optional
        Also put a static SVG picture of the current view, drawn by the system Graphviz
        ``dot``, in the cell output (``image/svg+xml`` next to the widget view), so a saved
        notebook shows the graph where widgets do not run (GitHub, nbviewer, exports).
        JupyterLab and Notebook 7 still show the live widget. Skipped silently when ``dot``
        is not installed or the view has more than ``STATIC_FALLBACK_MAX_UNITS`` (300)
        boxes. Default: the module-level switch ``gradwidget._widget.STATIC_FALLBACK``
        (True).
    auto_watch : bool, optional
        Training runs watch the drawn module by themselves until ``watch()`` is called
        (default True).
    """

    # A stub: the real front-end (widget.js + widget.css) ships once per page in the loader.
    _esm = STATIC / "stub.js"

    def __init__(
        self,
        source: Any,
        example_input: Any = None,
        *,
        depth: int | None = None,
        static_fallback: bool | None = None,
        auto_watch: bool = True,
        **kw,
    ):
        graph, module = graph_from(source, example_input)
        self.graph = graph
        self.module = module
        self.auto_watch = auto_watch
        self.static_fallback = STATIC_FALLBACK if static_fallback is None else static_fallback
        # Everything goes into the comm_open state: no follow-up messages on creation.
        super().__init__(
            loader=get_loader(), **graph_state(graph, depth, kw.get("expanded", ())), **kw
        )
        self._init_training(module, RunWatch(self))

    def __repr__(self) -> str:
        return f"<gradwidget.GradWidget: {len(self.graph)} nodes, selected={self.selected!r}>"

    def close(self) -> None:
        """Close the widget: stop any run, remove every hook, then close the comm."""
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            trainer.stop()
        self.unwatch()
        super().close()


def show(source: Any, **kw: Any) -> None:
    """Display ``source`` (a Graph, an output tensor or a module) as a GradWidget.

    Returns None, like ``display()``, so ``gw.show(loss)`` as the last line of a cell shows
    one widget, not two; build ``GradWidget(source)`` yourself to keep a handle.
    """
    from IPython.display import display

    display(GradWidget(source, **kw))
