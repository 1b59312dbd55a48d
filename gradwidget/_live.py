"""The live-gradients part of GradWidget: watch/unwatch, statistics, lints, the grad_* traits."""

from __future__ import annotations

import time
from typing import Any

import torch
import traitlets

from ._compare import RunGrads
from ._graph import Graph
from ._history import DEFAULT_HISTORY, History
from ._lint import LintConfig
from ._modstats import module_stats
from ._targets import caller_names
from ._watch import DEFAULT_EVERY, DEFAULT_MAX_OVERHEAD, Watcher
from ._wire import encode_stats


class LiveGradients(traitlets.HasTraits):
    """Traits and methods of the live gradients; a part of :class:`~gradwidget.GradWidget`.

    The composing widget sets ``self.graph``, ``self.module`` and ``self.auto_watch``.
    """

    graph: Graph
    module: torch.nn.Module | None
    auto_watch: bool

    grad_stats = traitlets.Bytes(
        b"", help="Latest statistics of the changed nodes (_wire.encode_stats)."
    ).tag(sync=True)
    grad_lint = traitlets.List(traitlets.Dict(), help="Current gradient warnings.").tag(sync=True)
    grad_origin = traitlets.Dict(
        help='Where the current NaN/Inf gradient starts: "node", "kind" (backward, forward, '
        'data, leaf), "value" (NaN/Inf), "op", "name", "module", "source", "path" (node ids '
        "from an output to it); {} when none (Watcher.origin)."
    ).tag(sync=True)
    compare_runs = traitlets.List(
        traitlets.Int(), help="Two run ids whose gradients the graph is colored by ([]: off)."
    ).tag(sync=True)
    grad_compare = traitlets.Dict(
        help='For compare_runs: "runs", "step" and "ratios" (node id -> log10 of run a\'s '
        'gradient norm over run b\'s, NaN where undefined), or "error"; {} when off.'
    ).tag(sync=True)
    grad_watch = traitlets.Dict(
        help='Watch state: "watching", "every_ms", "samples", the tiers\' "leaf_samples", '
        '"op_samples", "leaf_hz", "op_hz", "overhead" (share of training time), '
        '"skipped_steps", "scale", "local_intermediates", "notes", "history" (samples kept).'
    ).tag(sync=True)

    def watch(
        self,
        target: Any = None,
        *,
        every: float = DEFAULT_EVERY,
        lint: LintConfig | None = None,
        max_overhead: float = DEFAULT_MAX_OVERHEAD,
        trace: str = "nonfinite",
        history: int = DEFAULT_HISTORY,
    ) -> Watcher:
        """Show gradients live on the graph while training; replaces any earlier watch.

        Parameters
        ----------
        target : nn.Module, tensor, or list/dict of tensors, optional
            What to watch; default the module this widget drew. A module: every parameter
            (its ``.grad`` at each sampled ``optimizer.step()``: the gradient the optimizer
            uses) and the intermediates of sampled forwards. Leaf tensors (``[w, b]``) are
            watched on every backward; a non-leaf tensor (a loss) for its next backward.
        every : float
            Minimum seconds between two parameter samples (default 0.2: 5 Hz); 0 samples
            every step with full statistics. Intermediates come on some of those steps,
            as the overhead budget allows; the first and last step of a run always.
        lint : LintConfig, optional
            Thresholds of the vanishing/exploding/update-size warnings.
        max_overhead : float
            Share of the time sampling may take, both tiers together (default 0.03);
            intermediates are sampled less often when they would cost more (big graphs).
        trace : {"nonfinite", "always", "off"}
            Where a NaN/Inf gradient starts (``nonfinite_origin()``) is traced on the
            sampled step after one that held it (default), on every sampled step
            (``every=0, trace="always"`` catches the very step it first appears in, before
            an optimizer writes it into the weights), or never.
        history : int
            Samples kept for ``w.history`` and the step slider under the graph (default
            200; 40 bytes per sampled node and sample, e.g. ~12 MB for a GPT-2's 1,500 nodes).

        Returns
        -------
        Watcher
            Also a context manager: leaving ``with w.watch(model):`` removes every hook.
        """
        if target is None:
            target = self.module
            if target is None:
                raise ValueError(
                    "This widget was not built from a module: pass what to watch, "
                    "e.g. w.watch(model) or w.watch([w1, b1])."
                )
        names = caller_names(target if isinstance(target, (list, tuple)) else [target])
        # Checked before the Watcher, which hooks in as it is made: bad input leaks nothing.
        kept = History(self._node_ids(), history)
        watcher = Watcher(
            self.graph,
            target,
            every=every,
            on_sample=self._send_grads,
            lint=lint,
            names=names,
            max_overhead=max_overhead,
            trace=trace,
        )
        self.unwatch()  # only once the new one is valid: bad input leaves the old one
        self._history = kept
        watcher.on_remove = self._on_unwatched
        watcher.detail = {self.selected} if getattr(self, "selected", "") else set()
        self._watcher = watcher
        self.grad_watch = {
            "watching": True,
            "every_ms": every * 1000,
            "samples": 0,
            **watcher.rates(),
        }
        return watcher

    def unwatch(self) -> None:
        """Remove every hook ``watch`` added (safe to call when not watching).

        ``stats()`` keeps returning the last values.
        """
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.remove()

    @property
    def history(self) -> list[tuple[int, float, dict[str, dict[str, float]]]]:
        """``(step, time, stats)`` of the last samples kept (oldest first; ``step`` is the
        optimizer step, or the sample number without one; ``stats`` by node id with the wire's
        statistics, NaN where that sample did not compute one). [] before any watch."""
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.flush()
        kept = getattr(self, "_history", None)
        return kept.items() if kept is not None else []

    def _node_ids(self) -> list[str]:
        return [n.id for n in self.graph.nodes]

    @property
    def watcher(self) -> Watcher | None:
        """The latest :class:`Watcher` (for training runners: ``begin_run``/``end_run``)."""
        return getattr(self, "_watcher", None)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Latest gradient statistics by node id.

        Each value has ``name``, ``kind``, ``op``, ``shape``, ``norm``, ``mean``, ``std``,
        ``min``, ``max``, ``absmean``, ``nonfinite`` (NaN/Inf count), ``numel``, ``hist``
        (32 counts over [min, max] of the finite values), ``values``/``data`` (flat lists
        for tensors of at most 64 elements, else None) and, for parameters,
        ``weight_norm``. Statistics other than ``nonfinite`` cover the finite values.
        """
        watcher = getattr(self, "_watcher", None)
        if watcher is None:
            return {}
        watcher.flush()
        return {k: dict(v) for k, v in watcher.latest.items()}

    def nonfinite_origin(self) -> str | None:
        """Node id where the current NaN/Inf gradient starts, or None.

        Found on the step traced after a sample that held a NaN/Inf gradient (see
        :mod:`gradwidget._origin`): the first op whose backward turned finite gradients
        non-finite, or, when its inputs were already NaN/Inf in the forward, the op that
        made them (or the parameter / data holding them). ``w.grad_origin`` has the details.
        """
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.flush()
        origin = watcher.origin if watcher is not None else None
        return origin["node"] if origin else None

    def compare(self, run_a: int, run_b: int, step: int | None = None) -> dict[str, float]:
        """Per node ``log10(‖grad‖ in run_a / ‖grad‖ in run_b)`` at one step of both runs.

        Parameters
        ----------
        run_a, run_b : int
            Run ids (``w.runs[i]["id"]``) trained while this widget watched.
        step : int, optional
            Step of the runs (1 = each run's first optimizer step); default the latest step
            sampled in both (every run's first and last steps always are; ``watch(every=0)``
            samples every step).

        Returns
        -------
        dict
            Node id -> log-ratio (0: equal, 1: run_a's gradient is 10x larger); NaN where a
            norm is 0 or not finite. The graph shows it when ``compare_runs`` is set.
        """
        return self._runs_grads().compare(run_a, run_b, step)[1]

    def _runs_grads(self) -> RunGrads:
        rg = getattr(self, "_run_grads", None)
        if rg is None:
            rg = self._run_grads = RunGrads(self._node_ids())
        return rg

    @traitlets.observe("compare_runs")
    def _on_compare(self, change: dict) -> None:
        runs = list(change["new"])
        if len(runs) != 2:
            self.grad_compare = {}
            return
        try:
            step, ratios = self._runs_grads().compare(runs[0], runs[1])
        except ValueError as err:
            self.grad_compare = {"runs": runs, "error": str(err)}
            return
        # JSON has no NaN: undefined ratios are left out.
        clean = {k: v for k, v in ratios.items() if v == v}
        self.grad_compare = {"runs": runs, "step": step, "ratios": clean}

    def module_stats(self) -> dict[str, dict[str, Any]]:
        """Latest gradient aggregates per module path (what a collapsed module box shows).

        Each value has ``max_norm``/``mean_norm`` (over its nodes with a sample), ``nodes``,
        ``params``, ``numel``, ``nonfinite`` and ``zero`` (parameters whose gradient holds
        NaN/Inf / is all zeros), ``grad_norm`` (all its parameter gradients together),
        ``update_ratio`` (``‖Δw‖/‖w‖`` of the module's parameters together, None unless
        known for each) and ``max_update_ratio``; see :func:`gradwidget._modstats.module_stats`.
        """
        return module_stats(self.graph, self.stats())

    @property
    def lints(self) -> list[dict]:
        """Current gradient warnings (code, severity, node, name, message, advice)."""
        return list(self.grad_lint)

    @traitlets.observe("selected")
    def _on_selected(self, change: dict) -> None:
        # The selected node's detail panel shows its histogram: compute it at every sample.
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.detail = {change["new"]} if change["new"] else set()

    def _on_unwatched(self, watcher: Watcher) -> None:
        if watcher is getattr(self, "_watcher", None):
            self.grad_watch = {**self.grad_watch, "watching": False}
            trainer = getattr(self, "_trainer", None)
            if trainer is not None:
                trainer.end_manual(watched_only=True)  # a watched loop's run ends with it

    def _send_grads(self, watcher: Watcher, changed: list[str]) -> None:
        sample = watcher.last_sample
        update = encode_stats({k: sample[k] for k in changed}, watcher.samples)
        # Kept from the update itself: no per-node work on the training thread.
        self._history.add(watcher.opt_step, time.time(), update)
        run = getattr(self, "_grad_run", None)
        if run is not None:
            self._runs_grads().add(run, watcher.opt_step, update)
        self.grad_stats = update
        if watcher.lints != self.grad_lint:
            self.grad_lint = watcher.lints
        origin = watcher.origin or {}
        if origin != self.grad_origin:
            self.grad_origin = origin
        self.grad_watch = {
            "watching": True,
            "every_ms": watcher.every * 1000,
            "samples": watcher.samples,
            "history": self._history.size,  # samples the page keeps for its step slider
            "synced": watcher.synced,
            **watcher.rates(),
        }


class RunWatch:
    """The run hooks a Trainer calls: runs of a widget drawn from a module light up.

    Until the user calls ``watch()`` themselves (or when ``auto_watch`` is off), a run
    watches the drawn module by itself and removes those hooks when it ends.
    """

    def __init__(self, part: LiveGradients):
        self._w = part
        self._auto: Watcher | None = None  # the watcher a run started by itself, if any

    def begin_run(self) -> None:
        w = self._w
        if w.auto_watch and w.module is not None:
            current = w.watcher
            if current is None or current is self._auto:
                self._auto = w.watch()
        if w.watcher is not None:
            w.watcher.begin_run()
        # Samples of this run are kept by run id and step, for compare().
        running = [r["id"] for r in getattr(w, "run_info", []) if r.get("status") == "running"]
        w._grad_run = max(running) if running else None  # type: ignore[attr-defined]

    def sample_next(self) -> None:
        if self._w.watcher is not None:
            self._w.watcher.sample_next()

    def end_run(self) -> None:
        if self._w.watcher is not None:
            self._w.watcher.end_run()
        w = self._w
        w._grad_run = None  # type: ignore[attr-defined]
        if len(w.compare_runs) == 2:  # the compared runs may have changed: recompute
            w._on_compare({"new": w.compare_runs})
        if self._auto is not None:
            self._auto.remove()  # hooks live only while a run does; stats() keeps the values

    def manual(self) -> dict[str, Any] | None:
        watcher = self._w.watcher
        if watcher is None or not watcher.active or watcher is self._auto:
            return None
        return watcher.optimizer_info()
