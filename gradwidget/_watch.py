"""Live gradients: the Watcher, which samples a module's (or tensors') gradients.

Hooks are not free (a no-op hook on each parameter and module cost 1.13x on a tiny MLP), so
the watcher instruments per *sample*, not per step:

* Between samples no Python of ours runs in the training loop. A module's forward hook
  (the *gate*) is on the module only while a sample is due: the shared
  :class:`~gradwidget._clock.Clock` thread puts it there when the next sample falls due,
  and the hook takes itself off once it has armed the sample and measured the three steps
  after it (plain tensors have no forward: one post-accumulate hook per leaf checks the
  clock instead).
* A sample is due every ``every`` seconds (default 0.2 s), later when its cost would
  exceed ``max_overhead`` of the time (:class:`~gradwidget._budget.Budget`), and always on
  the first step of a run. That step's autograd graph is walked in the order the Graph was
  built in (:func:`~gradwidget._autograd.walk`) and a pre-hook put on each op node of *that
  graph only*; the graph dies after backward and its hooks with it.
* At the end of that backward (``queue_callback``) every collected gradient and every
  leaf's ``.grad`` is reduced on its own device (:func:`~gradwidget._stats.tensor_stats`)
  and handed to ``on_sample``; at most once per ``PROBE_EVERY`` seconds the next step is
  probed for a missing ``zero_grad`` (:class:`~gradwidget._probe.AccumulationProbe`).

A training runner holding a :class:`Watcher` calls ``begin_run()`` before the first step
(it is sampled, lints reset), ``sample_next()`` before a step that must be sampled whatever
the clock says (the last one), and ``end_run()`` after the last step (flushes the leaves'
``.grad`` if that step was not sampled; hooks stay until :meth:`Watcher.remove`). A loop no
forward hook can see calls ``step(*outputs)`` before each ``backward()``.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import _lint
from ._autograd import ACCUMULATE, op_name, walk
from ._budget import Budget
from ._clock import CLOCK
from ._graph import Graph
from ._probe import AccumulationProbe
from ._registry import claim, release
from ._stats import SMALL, tensor_stats, to_host
from ._steps import align, engine_callback, tensors_in
from ._targets import Targets

#: Default minimum seconds between two samples.
DEFAULT_EVERY = 0.2  # within the 100-200 ms that keeps a live view fluid
#: Default cap on the share of time spent sampling (cost of a sample / gap to the next).
DEFAULT_MAX_OVERHEAD = 0.015
#: Minimum seconds between two accumulation probes (after the first sample of a run).
PROBE_EVERY = 1.0


class Watcher:
    """Watches gradients of a module (or of tensors) for a widget's Graph.

    Parameters
    ----------
    graph : Graph
        The drawn graph; statistics are keyed by its node ids.
    target : torch.nn.Module, tensor, sequence or mapping of tensors
        What to watch. A module: every parameter and every intermediate of each forward
        (a forward hook on it while a sample is due). Tensors: leaves are watched across
        steps; a non-leaf tensor (e.g. a loss before ``backward()``) has its graph watched
        for its backward.
    every : float
        Minimum seconds between two samples; 0 samples every step (tests, debugging; the
        overhead cap is then off).
    on_sample : callable, optional
        ``on_sample(watcher, changed_ids)`` after each sample, on the training thread.
    lint : LintConfig, optional
    max_overhead : float
        Samples are spaced so that sampling (hooks, reductions, encoding, sending) takes
        at most this share of the time between samples (default 1.5%): big graphs lower
        the sample rate instead of slowing training.
    """

    def __init__(
        self,
        graph: Graph,
        target: Any,
        *,
        every: float = DEFAULT_EVERY,
        on_sample: Callable[[Watcher, list[str]], None] | None = None,
        lint: _lint.LintConfig | None = None,
        names: Mapping[int, str] | None = None,
        max_overhead: float = DEFAULT_MAX_OVERHEAD,
    ):
        if not isinstance(every, (int, float)) or isinstance(every, bool) or every < 0:
            raise ValueError(f"every must be a number of seconds >= 0, got {every!r}.")
        if not isinstance(max_overhead, (int, float)) or not 0 < max_overhead <= 1:
            raise ValueError(f"max_overhead must be in (0, 1], got {max_overhead!r}.")
        self.graph = graph
        self.every = float(every)
        self.max_overhead = float(max_overhead)
        self.on_sample = on_sample
        #: Called with the watcher when its hooks are removed.
        self.on_remove: Callable[[Watcher], None] | None = None
        self.lint_config = lint or _lint.LintConfig()
        self._targets = t = Targets(graph, target, names)
        self.module: torch.nn.Module | None = t.module
        self.leaves: list[torch.Tensor] = t.leaves

        seq = [n for n in graph.nodes if n.kind in ("leaf", "op")]
        self._seq_ids = [n.id for n in seq]
        self._seq_keys = ["AccumulateGrad" if n.kind == "leaf" else n.op for n in seq]
        self._outputs = [n.id for n in graph.nodes if n.kind == "output"]

        self._handles: list[Any] = []  # per-watch hooks (leaves), removed by remove()
        self._gate: Any = None  # the module's forward hook while a sample is due
        self._gate_lock = threading.Lock()  # the clock thread opens, the training closes
        self._active = False
        self._sample_handles: list[Any] = []  # this sample's node hooks
        self._probe = AccumulationProbe(t.name_of, self._internal_error)
        self._next = -math.inf  # wall clock (perf_counter) of the next due sample
        self._budget = Budget(self.every, self.max_overhead)
        self._force = True
        self._sampling = False
        self._grads: dict[str, torch.Tensor] = {}
        self._data: dict[str, torch.Tensor] = {}
        self._step_leaves: list[tuple[str, torch.Tensor]] = []
        self._map_cache: tuple[list[str], list[str | None]] | None = None
        self._trend = _lint.TrendLint(self.lint_config)
        self.latest: dict[str, dict[str, Any]] = {}
        self.lints: list[dict] = []
        self.steps = 0  # forwards seen through the gate (module) / backwards (tensors)
        self.samples = 0
        self.synced = True  # False when the step's graph did not match the drawn one
        self.errors = 0
        claim(self)
        self._attach()

    @property
    def last_cost(self) -> float:
        """CPU seconds of the last sample, tail included."""
        return self._budget.last_cost

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of all samples (hooks, reductions, sending)."""
        return self._budget.cpu_seconds

    @property
    def targets(self) -> list[Any]:
        """What this watcher hooks: its module, or its leaf tensors."""
        return self._targets.hooked()

    def _attach(self) -> None:
        self._active = True
        if self.module is not None:
            self.open_gate()
            CLOCK.add(self)
        for t in self.leaves:
            self._handles.append(t.register_post_accumulate_grad_hook(self._on_leaf))
        if self._targets.pending_roots:
            self._arm(self._targets.pending_roots, forced=True)

    @property
    def hook_count(self) -> int:
        """Hooks this watcher holds right now: its leaves' hooks, the module's gate while a
        sample is due, the sampled step's node hooks and the accumulation probes."""
        gate = self._gate is not None
        return len(self._handles) + gate + len(self._sample_handles) + len(self._probe.handles)

    @property
    def gate_open(self) -> bool:
        """True while the forward hook that arms a sample is on the module."""
        return self._gate is not None

    @property
    def due_at(self) -> float:
        """``perf_counter`` time of the next sample."""
        return self._next

    def open_gate(self) -> None:
        """Put the arming forward hook on the module (the clock calls this when due)."""
        with self._gate_lock:
            if self._gate is None and self._active and self.module is not None:
                self._gate = self.module.register_forward_hook(self._on_forward)

    def _close_gate(self) -> None:
        """Off the module (until the clock opens it again, unless removed)."""
        with self._gate_lock:
            if self._gate is None:
                return
            self._gate.remove()
            self._gate = None

    def remove(self) -> None:
        """Remove every hook. Idempotent; the latest statistics stay readable."""
        release(self)
        active, self._active = self._active, False
        CLOCK.discard(self)
        self._close_gate()
        for h in self._handles + self._sample_handles:
            h.remove()
        self._handles, self._sample_handles = [], []
        self._probe.remove()
        self._grads.clear()
        self._data.clear()
        self._step_leaves = []
        self._sampling = False
        if active and self.on_remove is not None:
            self.on_remove(self)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        # The block's last step is its run's last: show its gradients whatever the clock.
        try:
            self.end_run()
        except Exception as err:
            self._internal_error(err)
        finally:
            self.remove()

    def __repr__(self) -> str:
        what = type(self.module).__name__ if self.module is not None else "tensors"
        state = "watching" if self._active else "stopped"
        return (
            f"<gradwidget.Watcher {what}: {state}, every {self.every * 1000:.0f} ms, "
            f"{self.samples} samples, {len(self.lints)} lint>"
        )

    # ---- run protocol (for the training runner) ----------------------------------------
    def begin_run(self) -> None:
        """A run starts: sample its first step, forget lints of earlier runs."""
        self._force = True
        self._probe.reset()
        self._trend = _lint.TrendLint(self.lint_config)
        self.open_gate()

    def sample_next(self) -> None:
        """Sample the next step whatever the clock says."""
        self._force = True
        self.open_gate()

    def end_run(self) -> None:
        """A run ended: flush the leaves' current ``.grad`` unless the last step was sampled."""
        self._probe.remove()
        if not self._active or self._sampling or self._force:
            return  # removed, or the last step was sampled already
        leaves = [(self._targets.leaf_id(t), t) for t in self._targets.all_leaves()]
        self._grads = {nid: t.grad for nid, t in leaves if t.grad is not None}
        self._step_leaves = leaves
        if self._grads:
            self._finish(probe=False)

    def step(self, *outputs: torch.Tensor) -> None:
        """Per-step cheap path for a loop the watcher cannot see: outputs before backward."""
        self.steps += 1
        if self._budget.tail:
            self._track_tail()
        if self._force or (time.perf_counter() >= self._next):
            self._arm([t for t in outputs if isinstance(t, torch.Tensor)], forced=self._force)

    # ---- the per-step path ----------------------------------------------------------------
    def _on_forward(self, module: Any, args: Any, out: Any) -> None:
        self.steps += 1
        try:
            if self._budget.tail:
                self._track_tail()
            if self._force or (time.perf_counter() >= self._next):
                self._arm(tensors_in(out), forced=self._force)
            # Armed (or not due) and the tail measured: off until the next sample is due.
            done = not self._budget.tail and not self._force and self.every > 0
            if done and time.perf_counter() < self._next:
                self._close_gate()
        except Exception as err:  # never break the user's training
            self._internal_error(err)

    def _on_leaf(self, t: torch.Tensor) -> None:
        if self._sampling:
            return
        self.steps += 1
        if not (self._force or (time.perf_counter() >= self._next)):
            return
        try:
            if not engine_callback(self._finish_safe):
                return
            self._next = time.perf_counter() + self.every
            self._budget.cost = 0.0
            self._force = False
            self._sampling = True
            self._grads = {}
            self._data = {}
            self._step_leaves = [(self._targets.leaf_id(x), x) for x in self.leaves]
        except Exception as err:
            self._internal_error(err)

    # ---- one sample -------------------------------------------------------------------------
    def _map(self, order: list[Any]) -> list[str | None]:
        keys = [op_name(fn) for fn in order]
        if self._map_cache is not None and self._map_cache[0] == keys:
            ids = self._map_cache[1]
        else:
            idx = align(keys, self._seq_keys)
            ids = [None if i is None else self._seq_ids[i] for i in idx]
            self._map_cache = (keys, ids)
            self.synced = all(i is not None for i in idx)
        # Leaves by identity beat position: a parameter keeps its node whatever the order.
        return [
            self._targets.leaf_node.get(id(fn.variable), nid) if k == "AccumulateGrad" else nid
            for fn, k, nid in zip(order, keys, ids, strict=True)
        ]

    def _arm(self, outputs: list[torch.Tensor], forced: bool) -> None:
        roots = [t for t in outputs if t.grad_fn is not None]
        if not roots:
            return  # e.g. an eval forward under no_grad: wait for a real step
        cpu0 = time.thread_time()
        for h in self._sample_handles:
            h.remove()
        self._sample_handles = []
        self._next = time.perf_counter() + self.every
        self._force = False
        self._grads = {}
        self._data = {}
        order = walk(t.grad_fn for t in roots)
        ids = self._map(order)
        leaves: list[tuple[str, torch.Tensor]] = []
        fn_ids: dict[Any, str] = {}
        for fn, nid in zip(order, ids, strict=True):
            if fn.name() == ACCUMULATE:
                t = fn.variable
                leaves.append((nid or self._targets.leaf_id(t), t))
                continue
            if nid is None:
                continue
            fn_ids[fn] = nid
            self._sample_handles.append(fn.register_prehook(self._collector(nid)))
        # Output nodes show the gradient w.r.t. the forward's outputs.
        for out_id, t in zip(self._outputs, roots, strict=False):
            self._data[out_id] = t.detach()
            if t.grad_fn in fn_ids:
                self._sample_handles.append(
                    t.grad_fn.register_prehook(self._collector(out_id, t.output_nr))
                )
        if self.module is not None:
            in_graph = {id(t) for _, t in leaves}
            leaves += [
                (self._targets.leaf_id(p), p)
                for p in self._targets.all_leaves()
                if id(p) not in in_graph
            ]
        self._step_leaves = leaves
        self._budget.armed(cpu0, self.samples)

    def _collector(self, nid: str, slot: int = 0) -> Callable[[tuple], None]:
        def collect(grad_outputs: tuple) -> None:
            try:
                if not self._sampling:
                    if not engine_callback(self._finish_safe):
                        return
                    self._sampling = True
                g = grad_outputs[slot] if slot < len(grad_outputs) else None
                if g is not None:
                    self._grads[nid] = g.detach()
            except Exception as err:
                self._internal_error(err)

        return collect

    def _finish_safe(self) -> None:
        try:
            self._finish()
        except Exception as err:
            self._internal_error(err)

    def _finish(self, probe: bool = True) -> None:
        """End of a sampled backward: reduce, lint, hand over."""
        cpu0 = time.thread_time()
        self._sampling = False
        for h in self._sample_handles:
            h.remove()
        self._sample_handles = []
        missing: list[tuple[str, torch.Tensor]] = []
        params: dict[str, torch.Tensor] = {}
        for nid, t in self._step_leaves:
            if t.grad is None:
                if t.requires_grad:
                    missing.append((nid, t))
                continue
            self._grads[nid] = t.grad
            self._data[nid] = t.detach()
            params[nid] = t
        ids = list(self._grads)
        computed = tensor_stats([self._grads[i] for i in ids])
        norms = [torch.linalg.vector_norm(p.detach().float()) for p in params.values()]
        weight_norms = dict(zip(params, to_host(norms), strict=True)) if params else {}
        new: dict[str, dict[str, Any]] = {}
        for nid, s in zip(ids, computed, strict=True):
            s.update(self._targets.describe(nid, self._grads[nid]))
            data = self._data.get(nid)
            s["data"] = (
                data.reshape(-1).tolist() if data is not None and data.numel() <= SMALL else None
            )
            if nid in weight_norms:
                s["weight_norm"] = weight_norms[nid]
            new[nid] = s
        self._grads = {}
        self._data = {}
        self.latest.update(new)
        self.samples += 1

        lints = _lint.nonfinite(new)
        lints += [_lint.no_grad(nid, self._targets.name_of(nid, t)) for nid, t in missing]
        lints += list(self._probe.lints.values())
        lints += self._trend(new)
        self.lints = lints
        if probe and (self.every == 0 or time.perf_counter() >= self._probe.next_due):
            self._probe.next_due = time.perf_counter() + PROBE_EVERY
            self._probe.arm(params)
        if self.on_sample is not None:
            self.on_sample(self, ids)
        # Keep sampling (arm + reduce + send) under max_overhead of the training's time.
        spent = time.thread_time() - cpu0 + self._probe.cost
        self._probe.cost = 0.0
        self._next = max(self._next, self._budget.finished(spent))

    def _track_tail(self) -> None:
        charged, earliest = self._budget.track_tail(self.samples, self._probe.cost)
        if charged:
            self._probe.cost = 0.0
        self._next = max(self._next, earliest)

    # ---- errors -----------------------------------------------------------------------------
    def _internal_error(self, err: BaseException) -> None:
        self.errors += 1
        if self.errors <= 3:
            warnings.warn(
                f"gradwidget could not sample gradients ({type(err).__name__}: {err}); "
                "training is not affected.",
                RuntimeWarning,
                stacklevel=2,
            )
