"""Watching a framework's ``fit``: what the Lightning and Hugging Face callbacks share.

A framework runs the loop, so a :class:`FitWatch` reacts to its events instead: it
records the graph of the first training step (when the widget has none), watches the
module's gradients at the optimizer step, streams the logged losses as a run and, when
training ends in any way, removes every hook it added. It talks to the widget only
through the small :class:`FitHost` interface.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Protocol

import torch
from torch.utils._pytree import tree_leaves

from ._graph import Graph
from ._record import record


class FitHost(Protocol):
    """What a :class:`FitWatch` needs of the widget it reports to."""

    def has_graph(self) -> bool: ...

    def show_graph(self, graph: Graph, module: torch.nn.Module) -> None: ...

    def watch_module(self, module: torch.nn.Module, **kw: Any) -> Any: ...

    def unwatch(self) -> None: ...

    def begin_fit(self, info: dict[str, Any], total: int | None, note: str) -> None: ...

    def log_fit(self, loss: Any, step: int | None, metrics: dict[str, float]) -> None: ...

    def end_fit(self, status: str, note: str | None) -> None: ...


def scalar_metrics(values: Any, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The finite-or-not scalar entries of a framework's metrics mapping, as floats."""
    out: dict[str, float] = {}
    for key, v in dict(values or {}).items():
        if key in skip:
            continue
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            out[str(key)] = float(v.detach().float().item())
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            out[str(key)] = float(v)
    return out


def grad_outputs(out: Any) -> list[torch.Tensor]:
    """The loss if ``out`` carries one (a tensor, ``{"loss": ...}``, ``out.loss``), else
    every tensor in it that requires grad."""
    loss = out
    if isinstance(out, dict):
        loss = out.get("loss")
    elif not isinstance(out, torch.Tensor):
        loss = getattr(out, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        return [loss]
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]


class FitWatch:
    """The controller of one widget during a framework's training runs.

    Parameters
    ----------
    host : FitHost
        The widget's side.
    framework : str
        Named in the run's note and in messages ("Lightning", "Hugging Face Trainer").
    watch : dict
        Keyword arguments of ``watch()`` (``every``, ``max_overhead``, ``lint``).
    draw : bool
        Record the graph of the first training step when the widget has none.
    """

    def __init__(self, host: FitHost, framework: str, watch: dict[str, Any], draw: bool = True):
        self.host = host
        self.framework = framework
        self.watch_kw = watch
        self.draw = draw
        self.module: torch.nn.Module | None = None
        self.running = False
        self._rec: record | None = None
        self._watching = False

    # ---- the framework's events ----
    def start(self, module: torch.nn.Module, total: int | None, info: dict[str, Any]) -> None:
        """Training starts: a new run; watch at once when the widget already has a graph."""
        self.finish("stopped", "a new fit started")  # anything an earlier fit left behind
        self.module = module
        self.running = True
        self.host.begin_fit(info, total, f"{self.framework} fit")
        if self.host.has_graph():
            self._watch()

    def before_forward(self) -> None:
        """A training step is about to run its forward: record it if a graph is wanted."""
        if self.running and self._rec is None and self.draw and not self.host.has_graph():
            rec = record(self.module)
            rec.__enter__()
            self._rec = rec

    def after_forward(self, out: Any) -> None:
        """The recorded step computed ``out`` (its loss, or its outputs): draw it, watch."""
        rec, self._rec = self._rec, None
        if rec is None:
            return
        rec.__exit__(None, None, None)
        outs = grad_outputs(out)
        if outs and self.module is not None:
            self.host.show_graph(rec.graph_of(*outs), self.module)
        self.draw = False  # once per widget: a failed grab is not retried every step
        self._watch()

    def log(self, loss: Any, step: int | None = None, metrics: dict[str, float] | None = None):
        """A loss the framework logged (tensor or number), with its step and metrics."""
        if not self.running:
            return
        if self._rec is not None:  # a step that never reached its backward
            self.after_forward(None)
        if isinstance(loss, torch.Tensor):
            loss = float(loss.detach().float().item()) if loss.numel() == 1 else None
        if loss is not None and not isinstance(loss, numbers.Real):
            loss = None
        self.host.log_fit(loss, step, metrics or {})

    def finish(self, status: str = "done", note: str | None = None) -> None:
        """Training ended (``status``: done, stopped, error): remove every hook we added."""
        rec, self._rec = self._rec, None
        if rec is not None:
            rec.__exit__(None, None, None)
        if self._watching:
            self._watching = False
            self.host.unwatch()
        if self.running:
            self.running = False
            self.host.end_fit(status, note)

    def failed(self, exc: BaseException) -> None:
        """Training raised ``exc``: end as stopped (an interrupt) or error."""
        if isinstance(exc, KeyboardInterrupt):
            self.finish("stopped", "interrupted")
        else:
            self.finish("error", f"{type(exc).__name__}: {exc}")

    def _watch(self) -> None:
        if self.module is not None and not self._watching and self.host.has_graph():
            self.host.watch_module(self.module, **self.watch_kw)
            self._watching = True


def total_or_none(n: Any) -> int | None:
    """A step count a framework estimated, or None when it is unknown or infinite."""
    try:
        f = float(n)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f > 0 else None
