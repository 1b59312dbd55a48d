"""The leaf tier: parameter gradients read where, and when, the optimizer reads them.

At the optimizer step (see :mod:`gradwidget._optstep`) ``.grad`` is what the optimizer uses:
all-reduced under DDP, unscaled after ``GradScaler.unscale_``, accumulated over micro-batches.
Reading it needs no autograd hook at all, so this tier runs at the wall-clock rate (default
5 Hz) whatever the model's size; its cost is a few fused reductions over the gradients.
"""

from __future__ import annotations

import collections
import math
import time
import weakref
from typing import Any

import torch

from ._stats import SMALL, tensor_stats, to_host
from ._targets import Targets

#: Share of the overhead budget the parameter tier's norm samples may take, and its full
#: samples (histograms, exact moments, update ratios; the intermediates get the rest).
LEAF_SHARE = 0.5
FULL_SHARE = 0.1
#: Minimum seconds between two full samples of the parameters.
FULL_EVERY = 1.0
#: Update-to-weight ratios are measured (a copy of the weights before the step) up to this
#: many parameter elements; bigger models get no ratio rather than a doubled footprint.
MAX_UPDATE_COPY = 50_000_000


class LeafTier:
    """Sampling state of a module's parameter gradients.

    Parameters
    ----------
    targets : Targets
        The watched module's parameters and their node ids.
    """

    def __init__(self, targets: Targets):
        self.targets = targets
        self._param_ids = {id(p) for p in targets.all_leaves()}
        self._owns: dict[int, tuple[weakref.ref, bool]] = {}
        #: The optimizer last seen stepping these parameters (a weakref call).
        self.optimizer: Any = lambda: None
        #: An optimizer stepping these parameters was seen: ``.grad`` is read at its step.
        self.seen = False
        #: Optimizer steps seen (every step, sampled or not).
        self.opt_steps = 0
        self.last_step = -1  # opt_steps at the last sample
        self.next = -math.inf  # perf_counter of the next due sample
        self.force = True
        self.samples = 0
        self.params: dict[str, torch.Tensor] = {}
        self.times: collections.deque[float] = collections.deque(maxlen=64)
        self.full_force = True  # the next sample is a full one (first step, last step)
        self.full_next = -math.inf  # perf_counter of the next due full sample
        self.full_cost = 0.0
        self.cost = 0.0  # CPU seconds of the last sample
        self.recent: list[float] = []  # costs of the last samples
        self.cpu_seconds = 0.0
        #: What ``clip_grad_norm_`` did this step (its total norm and max_norm).
        self.clip: dict[str, Any] | None = None
        self._scaler: weakref.ref | None = None
        self.scale: float | None = None  # GradScaler's scale at the last sample
        #: Optimizer steps GradScaler skipped (inf/NaN gradients), from its scale's backoffs.
        self.skipped = 0

    def due(self, now: float) -> bool:
        return self.force or now >= self.next

    def owns(self, optimizer: torch.optim.Optimizer) -> bool:
        """Does ``optimizer`` step any of the watched parameters? (cached per optimizer)"""
        entry = self._owns.get(id(optimizer))
        if entry is not None and entry[0]() is optimizer:
            return entry[1]
        ids = self._param_ids
        mine = any(id(p) in ids for g in optimizer.param_groups for p in g["params"])
        self._owns[id(optimizer)] = (weakref.ref(optimizer), mine)
        if mine:
            self.optimizer = weakref.ref(optimizer)
        return mine

    def covers(self, params: list[torch.Tensor]) -> bool:
        ids = self._param_ids
        return any(id(p) in ids for p in params)

    def read(self, level: str, detail: frozenset | set = frozenset()) -> dict[str, dict[str, Any]]:
        """Statistics of every watched parameter's ``.grad`` now, by node id; the nodes in
        ``detail`` (the one the user looks at) get full statistics whatever ``level``."""
        t = self.targets
        params = [p for p in t.all_leaves() if p.grad is not None]
        grads = [p.grad for p in params]
        stats = tensor_stats(grads, level) if grads else []
        if level != "full" and detail:
            picked = [i for i, p in enumerate(params) if t.leaf_id(p) in detail]
            for i, s in zip(picked, tensor_stats([grads[i] for i in picked]), strict=True):
                stats[i] = s
        # Weight norms (for the vanishing/exploding lint) change slowly: full samples only.
        weights = [p.detach() for p in params] if level == "full" else []
        norms = to_host(list(torch._foreach_norm(weights))) if weights else [None] * len(params)
        out: dict[str, dict[str, Any]] = {}
        self.params = {}  # node id -> parameter of this read (those with a gradient)
        for p, g, s, wn in zip(params, grads, stats, norms, strict=True):
            nid = t.leaf_id(p)
            s.update(t.describe(nid, g))
            s["data"] = p.detach().reshape(-1).tolist() if p.numel() <= SMALL else None
            if wn is not None:
                s["weight_norm"] = wn
            out[nid] = s
            self.params[nid] = p
        return out

    def missing(self) -> list[tuple[str, torch.Tensor]]:
        """Trainable parameters without a gradient (not reached by backward)."""
        t = self.targets
        return [(t.leaf_id(p), p) for p in t.all_leaves() if p.grad is None]

    def note_scaler(self, scaler: Any) -> float | None:
        """The GradScaler driving this step (or None): its scale, and skipped steps since."""
        if scaler is None:
            return None
        if self._scaler is None or self._scaler() is not scaler:
            self._scaler, self.scale = weakref.ref(scaler), None
        scale = float(scaler.get_scale())
        if self.scale is not None and 0 < scale < self.scale:
            # Each skipped step multiplied the scale by the backoff factor (0.5 by default).
            backoff = float(scaler.get_backoff_factor())
            if 0 < backoff < 1:
                self.skipped += max(1, round(math.log(scale / self.scale) / math.log(backoff)))
        self.scale = scale
        return scale

    def done(self, cpu0: float, every: float, max_overhead: float, full: bool = False) -> None:
        """Account for a sample that began at thread CPU ``cpu0``; schedule the next."""
        now = time.perf_counter()
        self.cost = time.thread_time() - cpu0
        self.cpu_seconds += self.cost
        self.samples += 1
        self.times.append(now)
        self.force = False
        if full:
            # Histograms, exact moments, weight norms and update ratios of every parameter:
            # at most every FULL_EVERY seconds, and within FULL_SHARE of the budget.
            self.full_force = False
            self.full_cost = self.cost
            gap = FULL_EVERY
            if every > 0 and max_overhead < 1:
                gap = max(FULL_EVERY, self.cost / (FULL_SHARE * max_overhead))
            self.full_next = now + gap
            if self.recent:  # a full sample's cost says nothing of the norm samples'
                self.next = now + max(every, min(self.recent) / (LEAF_SHARE * max_overhead))
            else:
                self.next = now + every
            return
        gap = every
        if every > 0 and max_overhead < 1:
            # The smallest recent cost: a full sample (histograms, update ratio, ~1 Hz)
            # must not slow the 5 Hz ones. At most LEAF_SHARE of the budget: the rest
            # is the intermediates'.
            self.recent = [*self.recent[-4:], self.cost]
            gap = max(every, min(self.recent) / (LEAF_SHARE * max_overhead))
        # A fixed-rate grid, not "now + gap": with steps longer than half the period, a
        # sample at the first step after each due time keeps the average at 1 / gap (steps
        # of 165 ms would otherwise give 3 Hz for 5 Hz asked). After a pause, start afresh.
        on_grid = math.isfinite(self.next) and now - self.next < gap
        self.next = (self.next if on_grid else now) + gap

    def share(self, max_overhead: float) -> float:
        """Share of the time this tier costs at its current rates (norm and full samples)."""
        rate = rate_of(self.times)
        norm = min(self.recent) * rate if rate and self.recent else 0.0
        full = self.full_cost / FULL_EVERY
        return norm + min(full, FULL_SHARE * max_overhead)


class UpdateRatio:
    """‖Δw‖ / ‖w‖ of each parameter over one optimizer step, measured (not estimated)."""

    def __init__(self, params: list[tuple[str, torch.Tensor]]):
        self.params = params
        with torch.no_grad():
            self.before = [p.detach().clone() for _, p in params]

    def ratios(self) -> dict[str, tuple[float, float]]:
        """Per node id ``(‖Δw‖ / ‖w‖, ‖Δw‖)`` of the step, ``w`` the weights after it."""
        with torch.no_grad():
            now = [p.detach() for _, p in self.params]
            delta = torch._foreach_sub(now, self.before)
            dn = to_host(list(torch._foreach_norm(delta)))
            wn = to_host(list(torch._foreach_norm(now)))
        pairs = zip(self.params, dn, wn, strict=True)
        return {nid: (d / w if w > 0 else math.nan, d) for (nid, _), d, w in pairs}

    @staticmethod
    def affordable(params: list[tuple[str, torch.Tensor]]) -> bool:
        return sum(p.numel() for _, p in params) <= MAX_UPDATE_COPY


def rate_of(times: collections.deque[float], window: float = 5.0) -> float:
    """Samples per second over the last ``window`` seconds (0 with fewer than two)."""
    now = time.perf_counter()
    recent = [t for t in times if now - t <= window]
    if len(recent) < 2:
        return 0.0
    return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


def unscale(stats: dict[str, Any], scale: float) -> None:
    """Divide an intermediate's statistics by GradScaler's scale (the histogram's counts
    stay: its range scales with the values)."""
    for key in ("norm", "mean", "std", "min", "max", "absmean"):
        stats[key] = stats[key] / scale
    if stats.get("values"):
        stats["values"] = [v / scale for v in stats["values"]]
    stats["unscaled_by"] = scale
