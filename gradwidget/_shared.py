"""The intermediate tier of a multi-process job: the same steps hooked on every rank, their
gradients reduced across ranks (:func:`gradwidget._reduce.reduce_stats`).

An intermediate's gradient is each rank's own, of its own batch; the job's is all of them
(the global batch). Reducing needs collectives, and ranks that disagree about when a
collective happens hang, so the schedule is counted in forwards, which all ranks of a DDP
job run in lockstep: every rank samples the same forward, and the forward after the next
sample is decided by rank 0 (from its measured step time and the sample's cost) and handed
to all ranks inside the sample's first all-reduce. Between samples there is no collective
at all: one forward hook that counts. The collectives run on a process group of their own,
so they never interleave with DDP's.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from ._graph import Graph
from ._leaf import rate_of
from ._optier import OpTier
from ._reduce import reduce_stats
from ._steps import engine_callback, tensors_in
from ._targets import Targets

#: Least seconds between two samples of the intermediates (as the local widget's ~1 Hz).
MIN_PERIOD = 1.0
#: Least seconds between two samples with histograms and moments (three collectives).
FULL_EVERY = 5.0
#: Share of the overhead budget this tier may take (the parameters take the rest).
SHARE = 0.5


class SharedTier:
    """Samples a module's intermediates on the same forwards on every rank.

    Parameters
    ----------
    graph : Graph
        The drawn graph (recorded from the first forward on every rank: the same ids).
    model : nn.Module
    group : ProcessGroup
        A group of its own (``new_group`` at setup), for this tier's collectives.
    every : float
        0: every forward, full statistics; otherwise rank 0 spaces samples by budget.
    on_sample : callable
        ``on_sample(stats)`` on every rank after each sample, with the reduced statistics
        by node id.
    on_error : callable
    """

    def __init__(
        self,
        graph: Graph,
        model: torch.nn.Module,
        group: Any,
        *,
        every: float,
        max_overhead: float,
        on_sample: Callable[[dict[str, dict[str, Any]]], None],
        on_error: Callable[[BaseException], None],
    ):
        self.graph = graph
        self.group = group
        self.every = every
        self.max_overhead = max_overhead
        self.on_sample = on_sample
        self.on_error = on_error
        self.world_size = torch.distributed.get_world_size(group)
        self.rank = torch.distributed.get_rank(group)
        self._op = OpTier(graph, Targets(graph, model), self._on_first, on_error)
        self._ids = [n.id for n in graph.nodes if n.kind in ("op", "output")]
        self.forwards = 0  # training forwards since the one the graph was recorded from
        self.next = 1  # the forward the next sample hooks (the same on every rank)
        self.level = "full"
        self.samples = 0
        self.times: collections.deque[float] = collections.deque(maxlen=64)
        self.cpu_seconds = 0.0
        self._cpu = 0.0  # CPU of the sample in flight
        self._last = (time.perf_counter(), 0)  # (time, forwards) at the last sample
        self._last_full = -math.inf
        self._hook = model.register_forward_hook(self._on_forward)

    def remove(self) -> None:
        self._hook.remove()
        self._op.clear()

    @property
    def rate(self) -> float:
        return rate_of(self.times)

    # ---- the training thread ----------------------------------------------------------------
    def _on_forward(self, module: Any, args: Any, out: Any) -> None:
        if torch._C._current_graph_task_id() != -1:
            return  # activation checkpointing recomputing a forward inside a backward
        roots = [t for t in tensors_in(out) if t.grad_fn is not None]
        if not roots:
            return  # an evaluation forward: every rank skips it alike
        self.forwards += 1
        # Due, or overdue: a sampled forward whose backward never ran (every rank alike)
        # is sampled again at the next one.
        if self.forwards < self.next:
            return
        cpu0 = time.thread_time()
        try:
            self._op.arm(roots, with_module=False)
        except Exception as err:
            self.on_error(err)
        self._cpu = time.thread_time() - cpu0

    def _on_first(self) -> bool:
        return engine_callback(self._finish)

    def _finish(self) -> None:
        """End of the sampled backward, on every rank: reduce, agree on the next sample."""
        cpu0 = time.thread_time()
        op = self._op
        grads = op.grads
        op.clear()
        op.sampling = False
        parts = [grads.get(nid) for nid in self._ids]
        decision = self._decide() if self.rank == 0 else [0.0, 0.0]
        stats, (gap, full_next) = reduce_stats(parts, self.group, self.level, decision)
        self.next = self.forwards + max(1, int(gap))
        self.level = "full" if full_next else "norm"
        out: dict[str, dict[str, Any]] = {}
        for nid, s, g in zip(self._ids, stats, parts, strict=True):
            if g is None:
                continue  # no rank collected it (a node this step did not run)
            n = self.graph[nid]
            s.update(
                name=n.name or n.label.split("\n", 1)[0],
                kind=n.kind,
                op=n.op,
                index=n.index,
                shape=list(g.shape),
                module=n.module,
                local=False,
                ranks=self.world_size,
            )
            out[nid] = s
        self.samples += 1
        self.times.append(time.perf_counter())
        self._cpu += time.thread_time() - cpu0
        self.cpu_seconds += self._cpu
        try:
            self.on_sample(out)
        except Exception as err:
            self.on_error(err)

    def _decide(self) -> list[float]:
        """Rank 0: forwards until the next sample, and whether it is a full one."""
        now = time.perf_counter()
        t0, f0 = self._last
        self._last = (now, self.forwards)
        if self.level == "full":
            self._last_full = now
        if self.every == 0:
            return [1.0, 1.0]
        step = (now - t0) / max(self.forwards - f0, 1)
        period = max(MIN_PERIOD, self.every, self._cpu / (SHARE * self.max_overhead))
        gap = max(1, math.ceil(period / max(step, 1e-9)))
        full = now + period - self._last_full >= FULL_EVERY
        return [float(gap), float(full)]
