"""Live gradients: hooks on leaves and autograd nodes, on-device stats, wall-clock throttle.

Cost model
----------
Hooks are not free (a no-op hook on each parameter and module cost 1.13x on a tiny MLP), so
the watcher instruments per *sample*, not per step:

* Between samples no Python of ours runs in the training loop. A module's forward hook
  (the *gate*) is on the module only while a sample is due: one shared daemon thread
  (:class:`_Clock`) puts it there when the wall clock reaches the watcher's next sample
  time, and the hook takes itself off once it has armed the sample and measured the
  three steps after it. A permanent forward hook cost ~1.5% of the tiny MLP's steps
  here, the gate ~0. The thread exits when nothing is watched. (Plain tensors have
  no forward to hook: one post-accumulate hook per leaf does the clock check.)
* When a sample is due (every ``every`` seconds, default 0.2 s, spaced further apart if
  a sample's CPU cost would exceed ``max_overhead`` = 1.5% of the time between samples,
  and always on the first step of a run; the cost includes what the sample makes the next
  steps pay, see :meth:`Watcher._track_tail`), that step's autograd graph is walked with
  :func:`gradwidget._capture.walk` -- the same deterministic order the widget's Graph was
  built in -- and a pre-hook is put on each op node of *that graph only*. The graph dies
  after backward and its hooks with it.
* At the end of that backward (``queue_callback``), statistics of every collected gradient
  and every leaf's ``.grad`` are reduced on the tensors' own device (norm, mean, std, min,
  max, NaN/Inf count, 32-bin ``torch.histc`` over finite values, values when <= 64
  elements) and handed to ``on_sample`` (the widget encodes and sends them).
* For the accumulation lint, the step after a sample gets one pre-accumulate hook per
  parameter, which checks whether ``.grad`` still holds a non-zero gradient although the
  optimizer changed the weights since (``Tensor._version``); then those hooks go away.
  Only the first sample of a run and then at most one sample per ``PROBE_EVERY`` seconds
  arm this probe (every sample when ``every`` is 0): a step carrying it costs the
  training more than its hooks' own CPU (measured here: probing after every 150 ms sample
  cost ~3% of the tiny MLP's time), and a missing ``zero_grad`` is not a transient.

Integration with training runs (issue 5)
----------------------------------------
A training runner holding a :class:`Watcher` calls:

``begin_run()``
    Before the first step: the first step of the run is sampled, lints reset.
``sample_next()``
    Before a step that must be sampled whatever the clock says (e.g. the last step).
``end_run()``
    After the last step: flushes the leaves' current ``.grad`` if the last step was not
    sampled, and removes the one-step lint probes. Hooks stay until :meth:`remove`.
``step(*outputs)``
    The per-step cheap path when no module forward hook can see the step (plain tensors):
    pass the step's outputs (e.g. the loss) *before* ``backward()``; costs one clock check
    unless a sample is due.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from . import _lint
from ._capture import _ACCUMULATE, _names_in_frame, op_name, user_frame, walk
from ._graph import Graph

#: Histogram bins per tensor.
HIST_BINS = 32
#: Tensors with at most this many elements also send their values (micrograd's data | grad).
SMALL = 64
#: Default minimum seconds between two samples.
DEFAULT_EVERY = 0.2  # within the 100-200 ms that keeps a live view fluid
#: Default cap on the share of time spent sampling (cost of a sample / gap to the next).
DEFAULT_MAX_OVERHEAD = 0.015
#: Minimum seconds between two accumulation probes (after the first sample of a run).
PROBE_EVERY = 1.0


def _engine_callback(fn: Callable[[], None]) -> bool:
    """Run ``fn`` when the current backward finishes; False outside backward."""
    try:
        torch.autograd.Variable._execution_engine.queue_callback(fn)
    except RuntimeError:
        return False
    return True


# ---- statistics ---------------------------------------------------------------------------
def _as_float(t: torch.Tensor) -> torch.Tensor:
    x = t.detach().reshape(-1)
    if x.is_complex():
        x = x.abs()
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def _dense_key(t: torch.Tensor) -> tuple | None:
    """Identity of the memory block ``t`` covers exactly (any dim order), else None."""
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape, strict=True) if sz != 1)
    expect = 1
    for st, sz in dims:
        if st != expect:
            return None
        expect *= sz
    return (t.device, t.data_ptr(), t.numel(), t.dtype)


def _norms(xs: list[torch.Tensor], order: int) -> list[torch.Tensor]:
    """float64-accumulated vector norms, one fused op where torch has it."""
    try:
        return list(torch._foreach_norm(xs, order, dtype=torch.float64))
    except (AttributeError, TypeError, RuntimeError):  # older torch
        return [torch.linalg.vector_norm(x, order, dtype=torch.float64) for x in xs]


def _moments(xs: list[torch.Tensor]) -> list[list[float]]:
    """Per non-empty flat tensor ``[mean, std, L2, L1, min, max]``; one host sync per device.

    Sums and norms accumulate in float64; the variance comes from them as
    ``(L2^2 - n mean^2) / (n - 1)`` (one pass fewer than ``std_mean``; exact to ~1e-16
    relative unless |mean| exceeds std by ~1e7). A non-finite mean flags NaN/Inf.
    """
    by_dev: dict[torch.device, list[int]] = {}
    for i, x in enumerate(xs):
        by_dev.setdefault(x.device, []).append(i)
    out: list[list[float]] = [[] for _ in xs]
    for idx in by_dev.values():
        group = [xs[i] for i in idx]
        sums = torch.stack([x.sum(dtype=torch.float64) for x in group])
        mm = [torch.aminmax(x) for x in group]
        cols = torch.stack(
            [
                sums,
                torch.stack(_norms(group, 2)),
                torch.stack(_norms(group, 1)),
                torch.stack([m[0] for m in mm]).double(),
                torch.stack([m[1] for m in mm]).double(),
            ]
        )
        for i, (total, l2, l1, lo, hi) in zip(idx, cols.T.tolist(), strict=True):
            n = xs[i].numel()
            mean = total / n
            # Below the rounding of l2^2 the difference is noise (a constant tensor's std
            # would come out ~1e-8 instead of 0).
            spread = l2 * l2 - n * mean * mean
            var = spread / (n - 1) if n > 1 and spread > 1e-15 * l2 * l2 else 0.0
            out[i] = [mean, math.sqrt(var), l2, l1, lo, hi]
    return out


def tensor_stats(tensors: list[torch.Tensor]) -> list[dict[str, Any]]:
    """Statistics of each tensor, reduced on its own device.

    Returns, per tensor, plain Python numbers: ``norm``, ``mean``, ``std`` (0 for a single
    value), ``min``, ``max``, ``absmean`` and the 32-bin ``hist`` (``torch.histc`` over
    [min, max]), all over the *finite* values, plus ``nonfinite`` (count of NaN/Inf),
    ``numel`` and ``values`` (a flat list when the tensor has at most 64 elements, else
    None). About five torch ops per tensor and two host syncs per device in all; NaN/Inf
    (seen as a non-finite sum) costs a second pass over that tensor only.
    """
    # A transposed view of the same gradient (TBackward's grad vs the weight's .grad) has
    # the same statistics: reduce each dense block of memory once.
    first: dict[tuple, int] = {}
    alias: list[int | None] = []
    for i, t in enumerate(tensors):
        key = _dense_key(t)
        j = first.setdefault(key, i) if key is not None else i
        alias.append(j if j != i else None)
    own = [i for i, a in enumerate(alias) if a is None]
    flat: list[Any] = [None] * len(tensors)
    for i in own:
        flat[i] = _as_float(tensors[i])
    rows: list[Any] = [[math.nan] * 6 for _ in flat]
    filled = [i for i in own if flat[i].numel()]
    for i, row in zip(filled, _moments([flat[i] for i in filled]), strict=True):
        rows[i] = row
    nonfinite = [0] * len(flat)
    for i in filled:
        x = flat[i]
        if not all(math.isfinite(v) for v in rows[i]):
            fin = x[torch.isfinite(x)]
            nonfinite[i] = x.numel() - fin.numel()
            rows[i] = _moments([fin])[0] if fin.numel() else [math.nan] * 6
    hists_own = []
    for i in own:
        x = flat[i]
        lo, hi = rows[i][4], rows[i][5]
        if not math.isfinite(lo):
            hists_own.append(torch.zeros(HIST_BINS, device=x.device))
            continue
        if lo == hi:  # what histc does with an empty range
            lo, hi = lo - 1, hi + 1
        # histc ignores NaN and values outside [lo, hi] (the infinities).
        hists_own.append(torch.histc(x, bins=HIST_BINS, min=lo, max=hi))
    hists: list[Any] = [None] * len(flat)
    for i, h in zip(own, _host(hists_own), strict=True):
        hists[i] = h
    for i, a in enumerate(alias):
        if a is not None:
            rows[i], hists[i], nonfinite[i] = rows[a], hists[a], nonfinite[a]
    out = []
    for t, row, nf, hist in zip(tensors, rows, nonfinite, hists, strict=True):
        numel = t.numel()
        n = numel - nf
        mean, std, norm, l1, lo, hi = row
        out.append(
            {
                "norm": norm,
                "mean": mean,
                "std": std,
                "min": lo,
                "max": hi,
                "absmean": l1 / n if n else math.nan,
                "hist": hist,
                "nonfinite": nf,
                "numel": numel,
                "values": _as_float(t).tolist() if numel <= SMALL else None,
            }
        )
    return out


def _host(items: list[torch.Tensor]) -> list[Any]:
    """``tolist()`` of same-shape tensors with one device-to-host copy per device."""
    by_dev: dict[torch.device, list[int]] = {}
    for i, t in enumerate(items):
        by_dev.setdefault(t.device, []).append(i)
    out: list[Any] = [None] * len(items)
    for idx in by_dev.values():
        host = torch.stack([items[i] for i in idx]).double().tolist()
        for i, v in zip(idx, host, strict=True):
            out[i] = v
    return out


# ---- mapping a step's graph onto the drawn Graph -------------------------------------------
def _key(fn: Any) -> str:
    return op_name(fn)


def align(step_keys: list[str], graph_keys: list[str]) -> list[int | None]:
    """Index into ``graph_keys`` for each of ``step_keys`` (None where unmatched).

    Identical sequences map one to one. Otherwise (e.g. the widget drew the loss and the
    step is the module's output) the step's nodes are matched in order as a subsequence.
    """
    if step_keys == graph_keys:
        return list(range(len(step_keys)))
    out: list[int | None] = []
    j = 0
    for key in step_keys:
        k = j
        while k < len(graph_keys) and graph_keys[k] != key:
            k += 1
        if k < len(graph_keys):
            out.append(k)
            j = k + 1
        else:
            out.append(None)
    return out


class _Clock:
    """One daemon thread that opens watchers' gates when their next sample falls due.

    It holds the active watchers weakly and exits once none is left, so unwatching (or
    dropping the widget) leaves no thread behind. Closing a gate does not wake it (a
    wake-up costs the training thread a GIL hand-off): while some gate is open it looks
    every ``POLL`` seconds, otherwise it sleeps until the earliest next sample.
    """

    POLL = 0.1

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: dict[int, weakref.ref] = {}
        self._thread: threading.Thread | None = None

    def add(self, watcher: Watcher) -> None:
        with self._cond:
            self._active[id(watcher)] = weakref.ref(watcher)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gradwidget-clock", daemon=True
                )
                self._thread.start()

    def discard(self, watcher: Watcher) -> None:
        with self._cond:
            if self._active.pop(id(watcher), None) is not None:
                self._cond.notify()  # so the thread can exit now

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.perf_counter()
                wake = self._tick(now)
                if not self._active:
                    self._thread = None
                    return
                self._cond.wait(timeout=min(max(wake - now, 0.001), 3600))

    def _tick(self, now: float) -> float:
        """Open the gates that fell due; return when to look again (no strong refs kept)."""
        wake = math.inf
        for key, ref in list(self._active.items()):
            watcher = ref()
            if watcher is None:
                del self._active[key]
                continue
            if watcher._gate is None and watcher._next <= now:
                watcher._open_gate()
            # A closed gate: wake when it falls due; an open one: look again soon.
            wake = min(wake, watcher._next if watcher._gate is None else now + self.POLL)
        return wake


_CLOCK = _Clock()


#: id(module or leaf tensor) -> weakrefs to (it, the watcher hooked on it). A new watch of the
#: same target, e.g. a re-run cell that builds a new widget around the same model, replaces the
#: old watcher instead of stacking a second set of hooks. Keyed by id() with a weakref as a
#: guard against reuse (tensors cannot be dict keys by value: ``==`` is elementwise); weak on
#: both sides so this registry never keeps a model alive.
_ATTACHED: dict[int, tuple[weakref.ref, weakref.ref]] = {}


def _claim(watcher: Watcher) -> None:
    """Remove whatever other watcher hooks ``watcher``'s targets, then record ``watcher``."""
    for key in watcher.targets:
        entry = _ATTACHED.get(id(key))
        if entry is not None and entry[0]() is key:
            old = entry[1]()
            if old is not None and old is not watcher:
                old.remove()
        _ATTACHED[id(key)] = (weakref.ref(key), weakref.ref(watcher))


def _release(watcher: Watcher) -> None:
    for key in watcher.targets:
        entry = _ATTACHED.get(id(key))
        if entry is not None and entry[1]() in (watcher, None):
            del _ATTACHED[id(key)]


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
        self.module: torch.nn.Module | None = None
        self.leaves: list[torch.Tensor] = []
        self._pending_roots: list[torch.Tensor] = []
        self._leaf_name: dict[int, str] = {}
        self._resolve(target, names)

        seq = [n for n in graph.nodes if n.kind in ("leaf", "op")]
        self._seq_ids = [n.id for n in seq]
        self._seq_keys = ["AccumulateGrad" if n.kind == "leaf" else n.op for n in seq]
        self._leaf_node = self._leaf_nodes()
        self._outputs = [n.id for n in graph.nodes if n.kind == "output"]

        self._handles: list[Any] = []  # per-watch hooks (leaves), removed by remove()
        self._gate: Any = None  # the module's forward hook while a sample is due
        self._gate_lock = threading.Lock()  # the clock thread opens, the training closes
        self._active = False
        self._sample_handles: list[Any] = []  # this sample's node hooks
        self._probe_handles: list[Any] = []  # the one-step accumulation probe
        self._probe_next = -math.inf  # wall clock (perf_counter) of the next due probe
        self._probe_cost = 0.0  # CPU seconds of probe hooks, charged to the next sample
        self._next = -math.inf  # wall clock (perf_counter) of the next due sample
        self._cost = 0.0  # CPU seconds (this thread) spent on the sample in flight
        self._recent: list[float] = []  # costs of the last samples
        self._tail: list[float] = []  # thread CPU at the forwards from a sampled step on
        self._tail_samples = 0  # self.samples when that sampled step was armed
        self._finished_at = 0.0  # wall clock (perf_counter) at the end of the last sample
        self._force = True
        self._sampling = False
        self._grads: dict[str, torch.Tensor] = {}
        self._data: dict[str, torch.Tensor] = {}
        self._step_leaves: list[tuple[str, torch.Tensor]] = []
        self._map_cache: tuple[list[str], list[str | None]] | None = None
        self._probe: dict[int, tuple[str, int]] = {}
        self._accum: dict[str, dict] = {}
        self._trend = _lint.TrendLint(self.lint_config)
        self.latest: dict[str, dict[str, Any]] = {}
        self.lints: list[dict] = []
        self.steps = 0  # forwards seen through the gate (module) / backwards (tensors)
        self.samples = 0
        self.synced = True  # False when the step's graph did not match the drawn one
        self.errors = 0
        self.last_cost = 0.0  # CPU seconds of the last sample
        self.cpu_seconds = 0.0  # CPU seconds of all samples (hooks, reductions, sending)
        _claim(self)
        self._attach()

    @property
    def targets(self) -> list[Any]:
        """What this watcher hooks: its module, or its leaf tensors."""
        return [self.module] if self.module is not None else list(self.leaves)

    # ---- setup ----------------------------------------------------------------------------
    def _resolve(self, target: Any, names: Mapping[int, str] | None) -> None:
        if isinstance(target, torch.nn.Module):
            self.module = target
            for n, p in target.named_parameters():
                self._leaf_name[id(p)] = n
            return
        if isinstance(target, torch.Tensor):
            items: list[tuple[str | None, torch.Tensor]] = [(None, target)]
        elif isinstance(target, Mapping):
            items = [(str(k), v) for k, v in target.items()]
        elif isinstance(target, Iterable) and not isinstance(target, (str, bytes)):
            items = [(None, v) for v in target]
        else:
            raise TypeError(
                "watch() needs an nn.Module, a tensor, or a list/dict of tensors; "
                f"got {type(target).__name__}."
            )
        if not items:
            raise ValueError("watch() got nothing to watch: pass a module or some tensors.")
        for i, (_, t) in enumerate(items):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"Item {i} to watch is a {type(t).__name__}, not a tensor.")
            if not t.requires_grad:
                raise ValueError(
                    f"Tensor {i} to watch (shape {tuple(t.shape)}) does not require grad, so "
                    "it never gets a gradient. Set requires_grad=True on it."
                )
        given = dict(names or {})
        for name, t in items:
            if name is not None:
                given[id(t)] = name
        for _, t in items:
            if t.grad_fn is None:
                self.leaves.append(t)
                if id(t) in given:
                    self._leaf_name[id(t)] = given[id(t)]
            else:
                self._pending_roots.append(t)

    def _leaf_nodes(self) -> dict[int, str]:
        """Leaf tensor id -> node id, by parameter/variable name (robust to re-ordering)."""
        by_name = {n.name: n.id for n in self.graph.nodes if n.kind == "leaf" and n.name}
        out = {}
        for tid, name in self._leaf_name.items():
            nid = by_name.get(name)
            out[tid] = nid if nid is not None else f"leaf:{name}"
        return out

    def _attach(self) -> None:
        self._active = True
        if self.module is not None:
            self._open_gate()
            _CLOCK.add(self)
        for t in self.leaves:
            self._handles.append(t.register_post_accumulate_grad_hook(self._on_leaf))
        if self._pending_roots:
            self._arm(self._pending_roots, forced=True)

    @property
    def hook_count(self) -> int:
        """Hooks this watcher holds right now: its leaves' hooks, the module's gate while a
        sample is due, the sampled step's node hooks and the accumulation probes."""
        gate = self._gate is not None
        return len(self._handles) + gate + len(self._sample_handles) + len(self._probe_handles)

    def _open_gate(self) -> None:
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
        _release(self)
        active, self._active = self._active, False
        _CLOCK.discard(self)
        self._close_gate()
        for h in self._handles + self._sample_handles + self._probe_handles:
            h.remove()
        self._handles, self._sample_handles, self._probe_handles = [], [], []
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
        self._probe_next = -math.inf
        self._trend = _lint.TrendLint(self.lint_config)
        self._accum.clear()
        self._open_gate()

    def sample_next(self) -> None:
        """Sample the next step whatever the clock says."""
        self._force = True
        self._open_gate()

    def end_run(self) -> None:
        """A run ended: flush the leaves' current ``.grad`` unless the last step was sampled."""
        for h in self._probe_handles:
            h.remove()
        self._probe_handles = []
        if not self._active or self._sampling or self._force:
            return  # removed, or the last step was sampled already
        leaves = [(self._leaf_id(t), t) for t in self._all_leaves()]
        self._grads = {nid: t.grad for nid, t in leaves if t.grad is not None}
        self._step_leaves = leaves
        if self._grads:
            self._finish(probe=False)

    def step(self, *outputs: torch.Tensor) -> None:
        """Per-step cheap path for a loop the watcher cannot see: outputs before backward."""
        self.steps += 1
        if self._tail:
            self._track_tail()
        if self._force or (time.perf_counter() >= self._next):
            self._arm([t for t in outputs if isinstance(t, torch.Tensor)], forced=self._force)

    # ---- the per-step path ----------------------------------------------------------------
    def _on_forward(self, module: Any, args: Any, out: Any) -> None:
        self.steps += 1
        try:
            if self._tail:
                self._track_tail()
            if self._force or (time.perf_counter() >= self._next):
                self._arm(_tensors_in(out), forced=self._force)
            # Armed (or not due) and the tail measured: off until the next sample is due.
            done = not self._tail and not self._force and self.every > 0
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
            if not _engine_callback(self._finish_safe):
                return
            self._next = time.perf_counter() + self.every
            self._cost = 0.0
            self._force = False
            self._sampling = True
            self._grads = {}
            self._data = {}
            self._step_leaves = [(self._leaf_id(x), x) for x in self.leaves]
        except Exception as err:
            self._internal_error(err)

    # ---- one sample -------------------------------------------------------------------------
    def _leaf_id(self, t: torch.Tensor) -> str:
        nid = self._leaf_node.get(id(t))
        if nid is None:
            nid = f"leaf#{id(t)}"
        return nid

    def _all_leaves(self) -> list[torch.Tensor]:
        if self.module is not None:
            return [p for p in self.module.parameters() if p.requires_grad]
        return list(self.leaves)

    def _map(self, order: list[Any]) -> list[str | None]:
        keys = [_key(fn) for fn in order]
        if self._map_cache is not None and self._map_cache[0] == keys:
            ids = self._map_cache[1]
        else:
            idx = align(keys, self._seq_keys)
            ids = [None if i is None else self._seq_ids[i] for i in idx]
            self._map_cache = (keys, ids)
            self.synced = all(i is not None for i in idx)
        # Leaves by identity beat position: a parameter keeps its node whatever the order.
        return [
            self._leaf_node.get(id(fn.variable), nid) if k == "AccumulateGrad" else nid
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
            if fn.name() == _ACCUMULATE:
                t = fn.variable
                leaves.append((nid or self._leaf_id(t), t))
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
            leaves += [(self._leaf_id(p), p) for p in self._all_leaves() if id(p) not in in_graph]
        self._step_leaves = leaves
        if self.every > 0 and self.max_overhead < 1:
            self._tail = [cpu0]
            self._tail_samples = self.samples
        self._cost = time.thread_time() - cpu0

    def _collector(self, nid: str, slot: int = 0) -> Callable[[tuple], None]:
        def collect(grad_outputs: tuple) -> None:
            try:
                if not self._sampling:
                    if not _engine_callback(self._finish_safe):
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
        weight_norms = dict(zip(params, _host(norms), strict=True)) if params else {}
        new: dict[str, dict[str, Any]] = {}
        for nid, s in zip(ids, computed, strict=True):
            s.update(self._describe(nid, self._grads[nid]))
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
        lints += [_lint.no_grad(nid, self._name_of(nid, t)) for nid, t in missing]
        lints += list(self._accum.values())
        lints += self._trend(new)
        self.lints = lints
        if probe and (self.every == 0 or time.perf_counter() >= self._probe_next):
            self._probe_next = time.perf_counter() + PROBE_EVERY
            self._arm_probe(params)
        if self.on_sample is not None:
            self.on_sample(self, ids)
        # Keep sampling (arm + reduce + send) under max_overhead of the training's time:
        # after a sample costing c seconds, wait at least c / max_overhead.
        self._cost += time.thread_time() - cpu0 + self._probe_cost
        self._probe_cost = 0.0
        self.last_cost = self._cost
        self.cpu_seconds += self._cost
        # The smallest of the last three costs: a GC pass or first-call warm-up landing in
        # one sample must not stall the display for seconds.
        self._recent = [*self._recent[-2:], self._cost]
        if self.every > 0 and self.max_overhead < 1 and len(self._recent) > 1:
            gap = min(self._recent) / self.max_overhead
            self._next = max(self._next, time.perf_counter() + gap)
        self._finished_at = time.perf_counter()

    def _track_tail(self) -> None:
        """Charge a sample what it really cost the training, not only what it counted.

        The sampled backward runs the collector hooks, the probe runs in the next step, and
        the steps after a sample run slower (caches, allocator): none of that is inside the
        sample's own timing. With thread CPU at the forwards of steps s (sampled), s+1, s+2
        and s+3, the sample's full cost is ``(s..s+1) + (s+1..s+2) - 2 * (s+2..s+3)``.
        """
        tail = self._tail
        tail.append(time.thread_time())
        if len(tail) < 4:
            return
        self._tail = []
        if self.samples != self._tail_samples + 1 or not self._recent:
            return  # the sampled forward had no backward, or another sample interfered
        a, b, c = tail[1] - tail[0], tail[2] - tail[1], tail[3] - tail[2]
        counted = self.last_cost + self._probe_cost
        full = max(a + b - 2 * c, counted)
        self._probe_cost = 0.0
        self.cpu_seconds += full - self.last_cost
        self.last_cost = full
        self._recent[-1] = full
        if len(self._recent) > 1:
            gap = min(self._recent) / self.max_overhead
            self._next = max(self._next, self._finished_at + gap)

    def _name_of(self, nid: str, t: torch.Tensor) -> str:
        if nid in self.graph:
            n = self.graph[nid]
            return n.name or n.label.split("\n", 1)[0]
        return self._leaf_name.get(id(t), nid)

    def _describe(self, nid: str, g: torch.Tensor) -> dict[str, Any]:
        if nid in self.graph:
            n = self.graph[nid]
            name = n.name or n.label.split("\n", 1)[0]
            return {
                "name": name,
                "kind": n.kind,
                "op": n.op,
                "index": n.index,
                "shape": list(g.shape),
                "module": n.module,
            }
        return {
            "name": nid.removeprefix("leaf:"),
            "kind": "leaf",
            "op": None,
            "index": -1,
            "shape": list(g.shape),
            "module": None,
        }

    # ---- accumulation probe --------------------------------------------------------------
    def _arm_probe(self, params: dict[str, torch.Tensor]) -> None:
        """Hook the next backward's accumulation into each parameter that has a gradient.

        The hook goes on the parameter's AccumulateGrad node, which we keep alive so the next
        forward reuses it; once it fired we let go and the node dies with that step's graph.
        (``Tensor.register_hook`` would leave an empty hook wrapper on the parameter that
        costs every later backward a few percent, even after removal.)
        """
        for h in self._probe_handles:
            h.remove()
        handles: list[Any] = []
        queued = [False]

        def end() -> None:
            for h in handles:
                h.remove()
            handles.clear()

        with torch.enable_grad():
            for nid, p in params.items():
                if p.grad_fn is not None or not p.requires_grad:
                    continue
                acc = p.view_as(p).grad_fn.next_functions[0][0]
                hook = self._prober(nid, p, p._version, end, queued)
                handles.append(_NodeHook(acc, acc.register_prehook(hook)))
        self._probe_handles = handles

    def _prober(self, nid: str, p: torch.Tensor, version: int, end: Callable, queued: list):
        def probe(grad_outputs: tuple) -> None:
            incoming = grad_outputs[0]
            cpu0 = time.thread_time()
            try:
                if not queued[0]:
                    queued[0] = _engine_callback(end)
                prev = p.grad
                if prev is None or incoming is None or p._version == version:
                    # Zeroed (set_to_none=True), or no optimizer step since the sample:
                    # accumulating over micro-batches on purpose is not a bug.
                    self._accum.pop(nid, None)
                    return
                before = float(torch.linalg.vector_norm(prev.detach().float()))
                if before > 0:
                    added = float(torch.linalg.vector_norm(incoming.detach().float()))
                    name = self._name_of(nid, p)
                    self._accum[nid] = _lint.accumulating(nid, name, before, added)
                else:  # zero_grad(set_to_none=False)
                    self._accum.pop(nid, None)
            except Exception as err:
                self._internal_error(err)
            finally:
                self._probe_cost += time.thread_time() - cpu0

        return probe

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


class _NodeHook:
    """A hook handle that also keeps its autograd node alive until removed."""

    __slots__ = ("handle", "node")

    def __init__(self, node: Any, handle: Any):
        self.node = node
        self.handle = handle

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
        self.handle = self.node = None


def _tensors_in(out: Any) -> list[torch.Tensor]:
    """Tensors of a forward's output (a tensor, or a tuple/list/dict of them), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def caller_names(tensors: Iterable[Any]) -> dict[int, str]:
    """Names the user's variables give ``tensors`` (for watch([w, b]))."""
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    with contextlib.suppress(Exception):
        return _names_in_frame(user_frame(), ts)
    return {}
