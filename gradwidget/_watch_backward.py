"""The Watcher's forward and backward path: the gate, the intermediate tier, held steps.

A mixin of :class:`gradwidget._watch.Watcher` (which owns the state named here). The gate
(a forward hook, on the module only while a sample is due) arms a sampled step's graph
(:class:`~gradwidget._optier.OpTier`); at the end of its backward the intermediates are reduced
and the step is published, or held for its optimizer step when one steps these parameters.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ._stats import SMALL, tensor_stats
from ._steps import distributed, engine_callback, tensors_in


class AtForwardBackward:
    """Forward-hook and end-of-backward methods (see the module docstring)."""

    _leaf: Any
    _held: Any
    _op: Any
    _budget: Any
    _probe: Any
    _targets: Any
    _force: bool
    _fwd_trace: Any
    _trace_wanted: bool
    graph: Any
    origin: Any
    traces: int
    trace: str
    _next: float
    _cpu_start: float | None
    _op_times: Any
    every: float
    max_overhead: float
    detail: set
    module: Any
    leaves: list
    due_at: float
    samples: int
    steps: int
    op_samples: int

    def step(self, *outputs: torch.Tensor) -> None:
        """Per-step cheap path for a loop the watcher cannot see: outputs before backward."""
        self.steps += 1
        if self._budget.tail:
            self._track_tail()
        if self._force or (time.perf_counter() >= self._next):
            self._arm([t for t in outputs if isinstance(t, torch.Tensor)])

    # ---- the per-step path ----------------------------------------------------------------
    def _on_forward(self, module: Any, args: Any, out: Any) -> None:
        if torch._C._current_graph_task_id() != -1:
            return  # activation checkpointing recomputing the forward inside a backward
        self.steps += 1
        try:
            if self._cpu_start is None:
                self._cpu_start = time.thread_time()
            if self._held is not None:
                self._settle_held()
            if self._budget.tail:
                self._track_tail()
            now = time.perf_counter()
            leaf = self._leaf
            # Intermediates ride on a step the leaf tier samples anyway: one publication,
            # and never a leaf sample more than the leaf tier's own clock asks for.
            if self._force or (
                now >= self._next and (leaf is None or not leaf.seen or leaf.due(now))
            ):
                self._arm(tensors_in(out))
            # Armed (or not due), the tail measured, nothing held: off until due again.
            busy = self._budget.tail or self._force or self._held is not None
            if not busy and self.every > 0 and time.perf_counter() < self.due_at:
                self._close_gate()
        except Exception as err:  # never break the user's training
            self._internal_error(err)

    def _on_leaf(self, t: torch.Tensor) -> None:
        if self._op.sampling:
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
            self._op.sampling = True
            self._op.grads, self._op.data = {}, {}
            self._op.step_leaves = [(self._targets.leaf_id(x), x) for x in self.leaves]
        except Exception as err:
            self._internal_error(err)

    def _settle_held(self) -> None:
        """At the forward after a sampled step that had no optimizer step yet."""
        leaf, held = self._leaf, self._held
        assert held is not None
        if leaf is not None and leaf.seen:
            # Micro-batches accumulate until the optimizer steps: keep waiting for it. A
            # step GradScaler skipped (inf/NaN) never steps: its intermediates are dropped.
            if any(s["nonfinite"] for s in held["ops"].values()):
                self._held = None
            return
        self.flush()  # no optimizer in this loop: the end of backward was the final word

    def _await_end(self) -> bool:
        return engine_callback(self._finish_safe)

    def _arm(self, outputs: list[torch.Tensor]) -> None:
        roots = [t for t in outputs if t.grad_fn is not None]
        if not roots:
            return  # e.g. an eval forward under no_grad: wait for a real step
        cpu0 = time.thread_time()
        self._next = time.perf_counter() + self.every
        self._force = False
        fwd, trace = self._fwd_trace, self._trace_wanted
        if trace and fwd is not None and fwd.check is None:
            # The trace was asked for during this very forward (a loop without an optimizer
            # publishes at the next forward): trace the next step, forward included.
            self._op.arm(roots, with_module=self.module is not None)
            self._force = True
            self._budget.armed(cpu0, self.samples)
            return
        check = fwd.check if fwd is not None else None
        self._op.arm(roots, with_module=self.module is not None, trace=trace, forward=check)
        if self.trace != "always":  # else each sampled step is traced, the NaN step itself
            self._fwd_trace, self._trace_wanted = None, False
            if fwd is not None:
                fwd.remove()
        self._budget.armed(cpu0, self.samples)

    def _finish_safe(self) -> None:
        try:
            self._finish()
        except Exception as err:
            self._internal_error(err)

    def _finish(self) -> None:
        """End of a sampled backward: reduce the intermediates; publish or hold the step."""
        cpu0 = time.thread_time()
        op = self._op
        op.sampling = False
        for h in op.handles:
            h.remove()
        op.handles = []
        trace, op.trace = op.trace, None
        if trace is not None:  # this step was traced for where a NaN/Inf starts
            self.origin = trace.locate(self.graph)
            self.traces += 1
        ids = list(op.grads)
        level = "full" if self.every == 0 else "norm"
        local = distributed()
        ops: dict[str, dict[str, Any]] = {}
        computed = tensor_stats([op.grads[i] for i in ids], level)
        if level != "full" and self.detail:  # the node the user looks at: full statistics
            picked = [k for k, nid in enumerate(ids) if nid in self.detail]
            for k, s in zip(picked, tensor_stats([op.grads[ids[k]] for k in picked]), strict=True):
                computed[k] = s
        for nid, s in zip(ids, computed, strict=True):
            s.update(self._targets.describe(nid, op.grads[nid]))
            data = op.data.get(nid)
            s["data"] = (
                data.reshape(-1).tolist() if data is not None and data.numel() <= SMALL else None
            )
            if local:
                s["local"] = True  # this rank's gradient, before DDP's all-reduce
            ops[nid] = s
        op.grads, op.data = {}, {}
        self.op_samples += 1
        self._op_times.append(time.perf_counter())
        leaf = self._leaf
        if leaf is not None and leaf.seen:
            # The optimizer step publishes this step with the gradients it uses.
            self._held = {"ops": ops, "leaves": {}, "missing": [], "params": {}}
            self._held["steps"] = leaf.opt_steps
            leaf.force = True
        else:
            present = [(nid, t) for nid, t in op.step_leaves if t.grad is not None]
            missing = [(nid, t) for nid, t in op.step_leaves if t.grad is None and t.requires_grad]
            leaves = self._leaf_stats(present)
            params = dict(present)
            if leaf is not None:  # an optimizer may still step: wait for it (or the next forward)
                self._held = {"ops": ops, "leaves": leaves, "missing": missing, "params": params}
                self._held["steps"] = leaf.opt_steps
                leaf.force = True
            else:
                self._publish({**ops, **leaves}, missing, params)
        # Intermediates get what the budget leaves after the leaf tier, at least half of it.
        self._budget.max_overhead = max(
            self.max_overhead - (leaf.share(self.max_overhead) if leaf is not None else 0.0),
            self.max_overhead / 2,
        )
        spent = time.thread_time() - cpu0 + self._probe.cost
        self._probe.cost = 0.0
        self._next = max(self._next, self._budget.finished(spent))

    def _leaf_stats(self, leaves: list[tuple[str, torch.Tensor]]) -> dict[str, dict[str, Any]]:
        """Full statistics of leaves' current ``.grad`` (no optimizer involved)."""
        out: dict[str, dict[str, Any]] = {}
        grads = [t.grad for _, t in leaves]
        for (nid, t), s in zip(leaves, tensor_stats(grads), strict=True):
            s.update(self._targets.describe(nid, t.grad))
            s["data"] = t.detach().reshape(-1).tolist() if t.numel() <= SMALL else None
            s["weight_norm"] = float(torch.linalg.vector_norm(t.detach().float()))
            out[nid] = s
        return out

    def _track_tail(self) -> None:
        charged, earliest = self._budget.track_tail(self.samples, self._probe.cost)
        if charged:
            self._probe.cost = 0.0
        self._next = max(self._next, earliest)
