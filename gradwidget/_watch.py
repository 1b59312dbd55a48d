"""Live gradients: the Watcher, which samples a module's (or tensors') gradients in two tiers.

* **Leaf tier** (parameters): ``.grad`` read at the optimizer step, where it is the gradient
  the optimizer uses (:mod:`gradwidget._optstep`, :class:`~gradwidget._leaf.LeafTier`), at
  the wall-clock rate ``every`` (default 0.2 s: 5 Hz). No autograd hook is needed.
* **Intermediate tier** (autograd nodes): at a sampled step's forward the *gate* (a forward
  hook on the module, put there by the :class:`~gradwidget._clock.Clock` thread only while
  a sample is due) hooks that step's graph (:class:`~gradwidget._optier.OpTier`); at the
  end of its backward the collected gradients are reduced to norms (full statistics with
  ``every=0``). Its rate is what the overhead budget leaves after the leaf tier
  (:class:`~gradwidget._budget.Budget`), so it never starves the leaves.

A step sampled by both tiers is published once, at its optimizer step: intermediates
divided by GradScaler's scale, parameters after DDP's all-reduce, the update-to-weight ratio
measured over the step. A loop without an optimizer (or plain tensors watched) is published
at the end of the backward, as the only gradient there is. At most once per ``PROBE_EVERY``
seconds the next step is probed for a missing ``zero_grad``
(:class:`~gradwidget._probe.AccumulationProbe`).

A training runner calls ``begin_run()`` before the first step (it is sampled, lints reset),
``sample_next()`` before a step that must be sampled (the last one) and ``end_run()`` after
the last step (flushes what the last step left; hooks stay until :meth:`Watcher.remove`).
A loop no forward hook can see calls ``step(*outputs)`` before each ``backward()``.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import _lint, _optstep
from ._budget import Budget
from ._clock import CLOCK
from ._graph import Graph
from ._leaf import LeafTier, rate_of
from ._optier import OpTier
from ._origin import ForwardTrace
from ._probe import AccumulationProbe
from ._registry import claim, release
from ._stats import COMPUTED
from ._steps import distributed
from ._targets import Targets
from ._watch_backward import AtForwardBackward
from ._watch_step import PROBE_EVERY, AtOptimizerStep

#: Default minimum seconds between two samples (the leaf tier's rate: 5 Hz).
DEFAULT_EVERY = 0.2  # within the 100-200 ms that keeps a live view fluid
#: Default cap on the share of time spent sampling, both tiers together.
DEFAULT_MAX_OVERHEAD = 0.03
#: When a NaN/Inf origin is traced (see ``Watcher(trace=...)``).
TRACE_MODES = ("nonfinite", "always", "off")
#: What the widget says when a compiled module hides its per-op gradients.
COMPILED_NOTE = "compiled: per-op gradients not available"


class Watcher(AtForwardBackward, AtOptimizerStep):
    """Watches gradients of a module (or of tensors) for a widget's Graph.

    Parameters
    ----------
    graph : Graph
        The drawn graph; statistics are keyed by its node ids.
    target : torch.nn.Module, tensor, sequence or mapping of tensors
        What to watch. A module: every parameter (at each optimizer step) and every
        intermediate of sampled forwards. Tensors: leaves are watched across steps; a
        non-leaf tensor (e.g. a loss before ``backward()``) has its graph watched for its
        backward.
    every : float
        Minimum seconds between two samples; 0 samples every step with full statistics
        (tests, debugging; the overhead cap is then off).
    on_sample : callable, optional
        ``on_sample(watcher, changed_ids)`` after each sample, on the training thread.
    lint : LintConfig, optional
    names : mapping, optional
        ``id(tensor) -> name`` for tensors given in a list.
    max_overhead : float
        Share of the time sampling may take (default 3%), both tiers together: big graphs
        lower the intermediate tier's rate instead of slowing training.
    trace : {"nonfinite", "always", "off"}
        Where a NaN/Inf gradient starts (:mod:`gradwidget._origin`): traced on the sampled
        step after one that held it (default), on every sampled step (with ``every=0``: the
        NaN step itself, before an optimizer writes NaN into the weights), or never.
    intermediates : bool
        Sample a module's intermediates (default); False: its parameters only, with no
        forward hook on the module (a job whose intermediates are sampled across ranks).
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
        trace: str = "nonfinite",
        intermediates: bool = True,
    ):
        if not isinstance(every, (int, float)) or isinstance(every, bool) or every < 0:
            raise ValueError(f"every must be a number of seconds >= 0, got {every!r}.")
        if not isinstance(max_overhead, (int, float)) or not 0 < max_overhead <= 1:
            raise ValueError(f"max_overhead must be in (0, 1], got {max_overhead!r}.")
        if trace not in TRACE_MODES:
            raise ValueError(f"trace must be one of {TRACE_MODES}, got {trace!r}.")
        self.trace = trace
        self.intermediates = bool(intermediates)
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
        #: Notes the widget shows (e.g. why a tier is missing).
        self.notes: list[str] = [COMPILED_NOTE] if t.compiled else []
        self._leaf = LeafTier(t) if t.module is not None else None
        self._op = OpTier(graph, t, self._await_end, self._internal_error)
        self._handles: list[Any] = []  # per-watch hooks (leaves), removed by remove()
        self._gate: Any = None  # the module's forward hook while a sample is due
        self._gate_lock = threading.Lock()  # the clock thread opens, the training closes
        self._active = False
        self._probe = AccumulationProbe(t.name_of, self._internal_error)
        self._next = -math.inf  # wall clock (perf_counter) of the next intermediate sample
        self._budget = Budget(self.every, self.max_overhead)
        self._force = True
        #: A sampled step's results waiting for its optimizer step (or the next forward).
        self._held: dict[str, Any] | None = None
        #: Leaf results waiting for the optimizer step to finish (the update ratio).
        self._pending: tuple[dict, list, dict, Any, Any] | None = None
        self._trend = _lint.TrendLint(self.lint_config)
        self._op_times: collections.deque[float] = collections.deque(maxlen=64)
        self._cpu_start: float | None = None  # training thread's CPU at its first hook
        #: Node ids whose full statistics (histogram, moments) every sample computes: the
        #: node the user looks at (the widget sets its selection here); others get norms.
        self.detail: set[str] = set()
        self.latest: dict[str, dict[str, Any]] = {}
        self.last_sample: dict[str, dict[str, Any]] = {}
        self.lints: list[dict] = []
        #: Where the current NaN/Inf gradient starts (``_origin.BackwardTrace.locate``), or
        #: None: found by tracing the step after a sample that held one.
        self.origin: dict[str, Any] | None = None
        self._trace_wanted = False
        self._trace_after = -math.inf  # no new trace before (perf_counter)
        self._fwd_trace: ForwardTrace | None = None
        self.traces = 0  # steps traced for a NaN/Inf origin
        self.steps = 0  # forwards seen through the gate (module) / backwards (tensors)
        self.samples = 0  # sampled steps published
        self.op_samples = 0  # of which with intermediates
        self.errors = 0
        claim(self)
        self._attach()

    # ---- lifecycle ----------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True until :meth:`remove`."""
        return self._active

    def optimizer_info(self) -> dict[str, Any]:
        """``{"lr", "optimizer"}`` of the optimizer last seen stepping the parameters."""
        opt = self._leaf.optimizer() if self._leaf is not None else None
        if opt is None:
            return {"lr": None, "optimizer": None}
        return {"lr": float(opt.param_groups[0]["lr"]), "optimizer": type(opt).__name__}

    @property
    def synced(self) -> bool:
        """False when the sampled step's graph did not match the drawn one."""
        return self._op.synced

    @property
    def opt_step(self) -> int:
        """Optimizer steps seen so far (samples published, in a loop without an optimizer)."""
        leaf = self._leaf
        return leaf.opt_steps if leaf is not None and leaf.seen else self.samples

    @property
    def leaf_samples(self) -> int:
        """Samples of parameter gradients at an optimizer step."""
        return self._leaf.samples if self._leaf is not None else 0

    @property
    def last_cost(self) -> float:
        """CPU seconds of the last intermediate sample, tail included."""
        return self._budget.last_cost

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of all samples (hooks, reductions, sending), both tiers."""
        return self._budget.cpu_seconds + (self._leaf.cpu_seconds if self._leaf else 0.0)

    @property
    def targets(self) -> list[Any]:
        """What this watcher hooks: its module, or its leaf tensors."""
        return self._targets.hooked()

    def _attach(self) -> None:
        self._active = True
        if self._leaf is not None:
            _optstep.add(self)
        if self.module is not None and not self._targets.compiled and self.intermediates:
            self.open_gate()
            CLOCK.add(self)
        for t in self.leaves:
            self._handles.append(t.register_post_accumulate_grad_hook(self._on_leaf))
        if self.trace == "always":
            self._want_trace()  # every sampled step traced: see _origin
        if self._targets.pending_roots:
            self._arm(self._targets.pending_roots)

    @property
    def hook_count(self) -> int:
        """Hooks this watcher holds right now: its leaves' hooks, the module's gate while a
        sample is due, the sampled step's node hooks and the accumulation probes."""
        gate = self._gate is not None
        trace = len(self._op.trace.handles) if self._op.trace is not None else 0
        trace += len(self._fwd_trace.handles) if self._fwd_trace is not None else 0
        return len(self._handles) + gate + len(self._op.handles) + len(self._probe.handles) + trace

    @property
    def gate_open(self) -> bool:
        """True while the forward hook that arms a sample is on the module."""
        return self._gate is not None

    @property
    def due_at(self) -> float:
        """``perf_counter`` time of the next intermediate sample.

        Intermediates ride on a step the leaf tier samples anyway (one publication, and
        never a parameter sample more than the leaf tier's own clock asks for).
        """
        leaf = self._leaf
        if leaf is not None and leaf.seen and not leaf.force:
            return max(self._next, leaf.next)
        return self._next

    def open_gate(self) -> None:
        """Put the arming forward hook on the module (the clock calls this when due)."""
        with self._gate_lock:
            hookable = self.module is not None and not self._targets.compiled
            hookable = hookable and self.intermediates
            if self._gate is None and self._active and hookable:
                self._gate = self.module.register_forward_hook(self._on_forward)  # type: ignore[union-attr]

    def _close_gate(self) -> None:
        with self._gate_lock:
            if self._gate is not None:
                self._gate.remove()
                self._gate = None

    def remove(self) -> None:
        """Remove every hook. Idempotent; the latest statistics stay readable."""
        release(self)
        active, self._active = self._active, False
        CLOCK.discard(self)
        _optstep.discard(self)
        self._close_gate()
        for h in self._handles:
            h.remove()
        self._handles = []
        self._op.clear()
        self._op.step_leaves = []
        self._op.sampling = False
        self._probe.remove()
        self._trace_wanted = False
        if self._fwd_trace is not None:
            self._fwd_trace.remove()
            self._fwd_trace = None
        self._held = None
        if self._pending is not None:
            self._pending[4].remove()
            self._pending = None
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

    def rates(self) -> dict[str, Any]:
        """Tier counters, achieved rates (Hz, last 5 s) and the measured overhead share."""
        leaf = self._leaf
        spent = self.cpu_seconds
        total = (time.thread_time() - self._cpu_start) if self._cpu_start is not None else 0
        return {
            "leaf_samples": self.leaf_samples,
            "op_samples": self.op_samples,
            "leaf_hz": rate_of(leaf.times) if leaf is not None else 0.0,
            "op_hz": rate_of(self._op_times),
            "overhead": spent / total if total > 0 else 0.0,
            "skipped_steps": leaf.skipped if leaf is not None else 0,
            "scale": leaf.scale if leaf is not None else None,
            "local_intermediates": distributed(),
            "notes": list(self.notes),
        }

    # ---- run protocol (for the training runner) ----------------------------------------
    def begin_run(self) -> None:
        """A run starts: sample its first step, forget lints of earlier runs."""
        self._targets.refresh()
        self.sample_next()
        self._probe.reset()
        self._trend = _lint.TrendLint(self.lint_config)

    def sample_next(self) -> None:
        """Sample the next step whatever the clock says."""
        self._force = True
        if self._leaf is not None:
            self._leaf.force = self._leaf.full_force = True
        self.open_gate()

    def end_run(self) -> None:
        """A run ended: show what its last step left unless it was sampled already."""
        self._probe.remove()
        if not self._active or self._op.sampling:
            return
        if self._pending is not None or self._held is not None:
            self.flush()
            return
        leaf = self._leaf
        if leaf is not None:
            if leaf.seen and leaf.last_step == leaf.opt_steps:
                return  # the last optimizer step was sampled
            stats = leaf.read("full")
            if stats:
                self._publish(stats, leaf.missing(), probe=False)
            return
        if self._force:
            return  # nothing ran since the last sample was asked for
        grads = [(self._targets.leaf_id(t), t) for t in self.leaves if t.grad is not None]
        if grads:
            self._publish(self._leaf_stats(grads), [], probe=False)

    def flush(self) -> None:
        """Publish what a sampled step left waiting for its optimizer step (``stats()``,
        the end of a run, a loop without an optimizer)."""
        if self._pending is not None:
            new, missing, params, _, handle = self._pending
            handle.remove()
            self._pending = None
            self._publish(new, missing, params)
        held, self._held = self._held, None
        if held is not None:
            self._publish({**held["ops"], **held["leaves"]}, held["missing"], held["params"])

    # ---- publishing -----------------------------------------------------------------------
    def _publish(
        self,
        new: dict[str, dict[str, Any]],
        missing: list[tuple[str, torch.Tensor]],
        params: dict[str, torch.Tensor] | None = None,
        probe: bool = True,
    ) -> None:
        #: The statistics of the last sample as computed (the wire sends these: what a
        #: cheaper level did not compute is NaN there, and the page keeps its last value).
        self.last_sample = new
        for nid, s in new.items():
            # stats() keeps what a cheaper level did not compute from earlier samples.
            old = self.latest.get(nid)
            computed = COMPUTED.get(s.get("level", "full"), COMPUTED["full"])
            merged = s
            if old is not None and len(computed) < len(COMPUTED["full"]):
                merged = dict(s)
                for key in COMPUTED["full"] - computed:
                    if key in old:
                        merged[key] = old[key]
                for key in ("update_ratio", "update_norm", "weight_norm"):
                    if key in old and key not in s:
                        merged[key] = old[key]
            self.latest[nid] = merged
        self.samples += 1
        seen = {nid: self.latest[nid] for nid in new}  # with what earlier samples knew
        if not any(s["nonfinite"] for s in seen.values()):
            self.origin = None
        elif self.trace == "nonfinite" and self.origin is None and not self._trace_wanted:
            self._want_trace()
        lints = _lint.nonfinite(seen, self.origin, self.trace != "off")
        lints += [_lint.no_grad(nid, self._targets.name_of(nid, t)) for nid, t in missing]
        lints += list(self._probe.lints.values())
        lints += self._trend(seen)
        lints += _lint.step_lints(
            seen, self._leaf.skipped if self._leaf is not None else 0, self.lint_config
        )
        self.lints = lints
        if probe and params and (self.every == 0 or time.perf_counter() >= self._probe.next_due):
            self._probe.next_due = time.perf_counter() + PROBE_EVERY
            self._probe.arm(params)
        if self.on_sample is not None:
            self.on_sample(self, list(new))

    def _want_trace(self) -> None:
        """Trace the next sampled step for where its NaN/Inf starts (``_origin``)."""
        now = time.perf_counter()
        if now < self._trace_after and self.trace != "always":
            return  # traced a moment ago and found nothing: not on every step
        self._trace_after = now + PROBE_EVERY
        self._trace_wanted = True
        hooked = self.module is not None and not self._targets.compiled and self.intermediates
        if hooked and self._fwd_trace is None:  # no gate, no traced step: no forward check
            self._fwd_trace = ForwardTrace(self.module)
        self.sample_next()

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
