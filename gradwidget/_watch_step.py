"""The Watcher's leaf tier: what it does at ``clip_grad_norm_`` and at optimizer steps.

A mixin of :class:`gradwidget._watch.Watcher` (which owns the state named here); called by
:mod:`gradwidget._optstep` on the training thread. At a due optimizer step the parameters'
``.grad`` is read (after any ``clip_grad_norm_``, which only notes the norm it clipped from: the
colors are the gradient the optimizer steps with), GradScaler's scale is
noted (intermediates of the step are divided by it), a copy of the weights is kept, and the
step is published when the optimizer is done, with each parameter's measured update ratio.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ._leaf import UpdateRatio, unscale
from ._optstep import find_scaler

#: Minimum seconds between two accumulation probes (after the first sample of a run).
PROBE_EVERY = 1.0


class AtOptimizerStep:
    """Listener methods for :mod:`gradwidget._optstep` (see the module docstring)."""

    _leaf: Any
    _held: Any
    _pending: Any
    _active: bool
    _probe: Any
    _targets: Any
    _cpu_start: float | None
    every: float
    max_overhead: float
    detail: set

    # ---- the leaf tier: optimizer steps and clipping (called by _optstep) ---------------
    def before_clip(self, params: list[torch.Tensor], max_norm: float, total: Any) -> None:
        """Just before ``clip_grad_norm_`` clips: note the total norm it clips from, when due.

        ``total`` is the norm torch computed already: nothing is read here.
        """
        leaf = self._leaf
        try:
            due = leaf is not None and self._active and leaf.due(time.perf_counter())
            if due and leaf.covers(params):
                norm, limit = float(total), float(max_norm)
                leaf.clip = {"total_norm": norm, "max_norm": limit, "clipped": norm > limit}
        except Exception as err:
            self._internal_error(err)

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        leaf = self._leaf
        if leaf is None or not self._active:
            return
        try:
            if not leaf.owns(optimizer):
                return
            if self._pending is not None:
                self.flush()  # the last sampled step's optimizer step never finished
            leaf.seen = True
            leaf.opt_steps += 1
            if leaf.due(time.perf_counter()):
                self._sample_leaves(optimizer)
        except Exception as err:
            self._internal_error(err)

    def _sample_leaves(self, optimizer: torch.optim.Optimizer) -> None:
        cpu0 = time.thread_time()
        if self._cpu_start is None:
            self._cpu_start = cpu0
        leaf = self._leaf
        assert leaf is not None
        held, self._held = self._held, None
        ops = held["ops"] if held is not None and held["steps"] == leaf.opt_steps - 1 else {}
        now = time.perf_counter()
        full = self.every == 0 or leaf.full_force or now >= leaf.full_next
        level = "full" if full else "norm"
        stats = leaf.read(level, self.detail)
        clip, leaf.clip = leaf.clip, None
        for s in stats.values():
            if clip is not None:
                s["clipped"] = clip["clipped"]
                s["clip_total_norm"] = clip["total_norm"]
                s["clip_max_norm"] = clip["max_norm"]
        scale = leaf.note_scaler(find_scaler())
        if scale:
            for s in ops.values():
                unscale(s, scale)
        # Fused optimizers unscale inside their own kernel: GradScaler hands them the scale
        # (and skips nothing: they see found_inf and leave the weights alone themselves).
        found = getattr(optimizer, "found_inf", None)
        if isinstance(found, torch.Tensor) and float(found) > 0:
            leaf.done(cpu0, self.every, self.max_overhead)
            return  # a skipped step: no gradient to show (counted from the scale's backoff)
        fused_scale = getattr(optimizer, "grad_scale", None)
        if isinstance(fused_scale, torch.Tensor):
            for s in stats.values():
                unscale(s, float(fused_scale))
        params = {nid: p for nid, p in leaf.params.items() if nid in stats}
        # The update ratio (a copy of the weights, a pass after the step) comes with the
        # full samples, ~1 Hz: it changes slowly, and the 5 Hz colors need only the norms.
        items = list(params.items())
        measure = full and UpdateRatio.affordable(items)
        ratio = UpdateRatio(items) if measure else None
        # The probe must see the weights' versions before this step updates them.
        if self.every == 0 or time.perf_counter() >= self._probe.next_due:
            self._probe.next_due = time.perf_counter() + PROBE_EVERY
            self._probe.arm(params)
        handle = optimizer.register_step_post_hook(self._after_step)
        self._pending = ({**ops, **stats}, leaf.missing(), params, ratio, handle)
        leaf.last_step = leaf.opt_steps
        leaf.done(cpu0, self.every, self.max_overhead, full)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        cpu0 = time.thread_time()
        try:
            new, missing, _, ratio, handle = pending
            handle.remove()
            if ratio is not None:
                for nid, (r, moved) in ratio.ratios().items():
                    new[nid]["update_ratio"] = r
                    new[nid]["update_norm"] = moved  # ‖Δw‖: per-module ratios add these up
            self._publish(new, missing, probe=False)  # probed before the update
        except Exception as err:
            self._internal_error(err)
        finally:
            if self._leaf is not None:
                spent = time.thread_time() - cpu0
                self._leaf.cost += spent
                self._leaf.cpu_seconds += spent
