"""The accumulation probe: does ``.grad`` still hold an old gradient when the next one lands?

Armed for one step after a sample: a pre-hook on each parameter's AccumulateGrad node checks
whether ``.grad`` is non-zero although the optimizer changed the weights since (``_version``),
i.e. a missing ``zero_grad()``. Then the hooks go away.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from . import _lint
from ._steps import NodeHook, engine_callback


class AccumulationProbe:
    """One-step probes of a watcher's parameters and the lints they found.

    Parameters
    ----------
    name_of : callable
        ``name_of(node_id, tensor)``: the name a lint shows.
    on_error : callable
        Called with an exception raised inside a hook (hooks must never break training).
    """

    def __init__(self, name_of: Callable[[str, torch.Tensor], str], on_error: Callable):
        self._name_of = name_of
        self._on_error = on_error
        self.handles: list[Any] = []
        #: node id -> the accumulation lint found for it.
        self.lints: dict[str, dict] = {}
        #: CPU seconds spent in probe hooks and not yet charged to a sample.
        self.cost = 0.0
        #: ``perf_counter`` time before which no new probe is armed.
        self.next_due = -math.inf

    def reset(self) -> None:
        """A new run: probe its first sample, forget earlier findings."""
        self.lints.clear()
        self.next_due = -math.inf

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def arm(self, params: dict[str, torch.Tensor]) -> None:
        """Hook the next backward's accumulation into each parameter that has a gradient.

        The hook goes on the parameter's AccumulateGrad node, which we keep alive so the next
        forward reuses it; once it fired we let go and the node dies with that step's graph.
        (``Tensor.register_hook`` would leave an empty hook wrapper on the parameter that
        costs every later backward a few percent, even after removal.)
        """
        self.remove()
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
                handles.append(NodeHook(acc, acc.register_prehook(hook)))
        self.handles = handles

    def _prober(self, nid: str, p: torch.Tensor, version: int, end: Callable, queued: list):
        def probe(grad_outputs: tuple) -> None:
            incoming = grad_outputs[0]
            cpu0 = time.thread_time()
            try:
                if not queued[0]:
                    queued[0] = engine_callback(end)
                prev = p.grad
                if prev is None or incoming is None or p._version == version:
                    # Zeroed (set_to_none=True), or no optimizer step since the sample:
                    # accumulating over micro-batches on purpose is not a bug.
                    self.lints.pop(nid, None)
                    return
                before = float(torch.linalg.vector_norm(prev.detach().float()))
                if before > 0:
                    added = float(torch.linalg.vector_norm(incoming.detach().float()))
                    self.lints[nid] = _lint.accumulating(nid, self._name_of(nid, p), before, added)
                else:  # zero_grad(set_to_none=False)
                    self.lints.pop(nid, None)
            except Exception as err:
                self._on_error(err)
            finally:
                self.cost += time.thread_time() - cpu0

        return probe
