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
from ._loader import get_loader, send_own_copy
from ._record import record
from ._targets import eager_module
from ._view import GraphView, graph_state

#: Default of ``GradWidget(static_fallback=...)``: a static SVG next to the live widget.
STATIC_FALLBACK = True


def graph_from(source: Any, example_input: Any = None) -> tuple[Graph, torch.nn.Module | None]:
    """Build the Graph a widget shows from a Graph, an output tensor or a module."""
    if source is None:
        return Graph([], []), None
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
    source : Graph, torch.Tensor or torch.nn.Module, optional
        What to draw. A module records one forward pass on ``example_input`` so the graph
        is clustered by module and carries source lines. None: an empty widget that a
        training callback (:meth:`lightning_callback`, :meth:`hf_callback`) draws into.
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
        source: Any = None,
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
        # Hosts that cannot compose widgets ask this widget for the loader's bytes.
        self.on_msg(send_own_copy)
        if not len(graph):
            self.title = "No graph yet: a training callback draws its first step here."

    def __repr__(self) -> str:
        return f"<gradwidget.GradWidget: {len(self.graph)} nodes, selected={self.selected!r}>"

    def draw(self, source: Any, example_input: Any = None) -> None:
        """Show another graph in this widget (what ``GradWidget(source, example_input)`` takes).

        Any watch of the old graph ends first; finished runs stay.
        """
        graph, module = graph_from(source, example_input)
        self._show_graph(graph, module)

    def _show_graph(self, graph: Graph, module: torch.nn.Module | None) -> None:
        self.unwatch()
        self.graph, self.module = graph, module
        self.selected = ""
        with self.hold_sync():
            self.title = ""
            for name, value in graph_state(graph, self.depth, ()).items():
                setattr(self, name, value)

    def lightning_callback(self, **watch: Any) -> Any:
        """A Lightning callback: ``pl.Trainer(callbacks=[w.lightning_callback()])``.

        During ``fit`` it draws the LightningModule's first training step (when this widget
        has no graph yet), shows the gradients the optimizer steps with, streams the
        training loss and logged metrics as a run with progress, and removes every hook when
        ``fit`` ends, fails or is interrupted. Works with ``pytorch_lightning`` and
        ``lightning``; ``watch`` takes :meth:`watch`'s keywords (``every``,
        ``max_overhead``, ``lint``).
        """
        from ._lightning import make_callback

        return make_callback(self._fit_watch("Lightning", watch))

    def hf_callback(self, **watch: Any) -> Any:
        """A Hugging Face ``transformers.Trainer`` callback: ``callbacks=[w.hf_callback()]``.

        The same as :meth:`lightning_callback` for ``Trainer.train()``: the first step's
        graph, the gradients after unscaling and clipping, the logged loss as a run, and
        every hook removed when training ends, fails or is interrupted.
        """
        from ._hf import make_callback

        return make_callback(self._fit_watch("Hugging Face Trainer", watch))

    def _fit_watch(self, framework: str, watch: dict[str, Any]) -> Any:
        from ._fit import FitWatch

        unknown = set(watch) - {"every", "max_overhead", "lint"}
        if unknown:
            raise TypeError(
                f"Unknown keyword {sorted(unknown)[0]!r}: the callback takes watch()'s "
                "every=, max_overhead= and lint=."
            )
        return FitWatch(_FitAdapter(self), framework, watch)

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


class _FitAdapter:
    """The widget as a training callback sees it (:class:`gradwidget._fit.FitHost`)."""

    def __init__(self, w: GradWidget):
        self._w = w

    def has_graph(self) -> bool:
        return len(self._w.graph) > 0

    def show_graph(self, graph: Graph, module: torch.nn.Module) -> None:
        self._w._show_graph(graph, module)

    def watch_module(self, module: torch.nn.Module, **kw: Any) -> Any:
        return self._w.watch(module, **kw)

    def unwatch(self) -> None:
        self._w.unwatch()

    def begin_fit(self, info: dict[str, Any], total: int | None, note: str) -> None:
        t = self._w._trainer
        t.begin_manual(info, total=total, note=note)
        t.message(
            f"The lr and optimizer controls cannot rerun a {note}: it runs in your own cell "
            "(change the settings there and run it again; every run stays in the list)."
        )

    def log_fit(self, loss: Any, step: int | None, metrics: dict[str, float]) -> None:
        self._w._trainer.log_manual(loss, step=step, metrics=metrics)

    def end_fit(self, status: str, note: str | None) -> None:
        self._w._trainer.end_manual(status, note)
