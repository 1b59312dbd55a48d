"""The intermediate tier: one sampled step's autograd graph, hooked and collected.

At a sampled step's forward the step's graph is walked in the order the drawn Graph was
built in (:func:`~gradwidget._autograd.walk`) and a pre-hook put on each op node of *that
graph only*; the graph dies after backward and its hooks with it. Each hook keeps the
gradient flowing into its node; the watcher reduces them at the end of the backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._autograd import ACCUMULATE, op_name, walk
from ._graph import Graph
from ._origin import BackwardTrace, ForwardCheck
from ._steps import align
from ._targets import Targets


class OpTier:
    """Hooks of one sampled step and the gradients they collected.

    Parameters
    ----------
    graph : Graph
        The drawn graph: the step's nodes are matched to its nodes.
    targets : Targets
    on_first : callable
        Called (with no argument) by the first hook that fires in a backward; returns False
        when the end of the backward cannot be awaited (then nothing is collected).
    on_error : callable
        Called with an exception raised inside a hook.
    """

    def __init__(
        self, graph: Graph, targets: Targets, on_first: Callable[[], bool], on_error: Callable
    ):
        self._targets = targets
        self._on_first = on_first
        self._on_error = on_error
        seq = [n for n in graph.nodes if n.kind in ("leaf", "op")]
        self._seq_ids = [n.id for n in seq]
        self._seq_keys = ["AccumulateGrad" if n.kind == "leaf" else n.op for n in seq]
        self._outputs = [n.id for n in graph.nodes if n.kind == "output"]
        self._map_cache: tuple[list[str], list[str | None]] | None = None
        self.handles: list[Any] = []
        #: node id -> gradient collected during this backward (ops, outputs).
        self.grads: dict[str, torch.Tensor] = {}
        #: node id -> forward value (outputs) for micrograd-style data | grad.
        self.data: dict[str, torch.Tensor] = {}
        #: (node id, tensor) of the step's leaves, whose ``.grad`` the sample reads.
        self.step_leaves: list[tuple[str, torch.Tensor]] = []
        self.sampling = False  # a hook fired; the end of the backward is awaited
        self.synced = True  # False when the step's graph did not match the drawn one
        #: A step traced for where a NaN/Inf starts (:mod:`gradwidget._origin`).
        self.trace: BackwardTrace | None = None

    def clear(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        if self.trace is not None:
            self.trace.remove()
            self.trace = None
        self.grads = {}
        self.data = {}

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
        leaf_node = self._targets.leaf_node
        return [
            leaf_node.get(id(fn.variable), nid) if k == "AccumulateGrad" else nid
            for fn, k, nid in zip(order, keys, ids, strict=True)
        ]

    def arm(
        self,
        roots: list[torch.Tensor],
        with_module: bool,
        trace: bool = False,
        forward: ForwardCheck | None = None,
    ) -> None:
        """Hook the graph behind ``roots`` (tensors with a ``grad_fn``) for its backward;
        ``trace``: also trace where a NaN/Inf starts (``forward``: that step's forward)."""
        self.clear()
        order = walk(t.grad_fn for t in roots)
        ids = self._map(order)
        leaves: list[tuple[str, torch.Tensor]] = []
        fn_ids: dict[Any, str] = {}
        for k, (fn, nid) in enumerate(zip(order, ids, strict=True)):
            if fn.name() == ACCUMULATE:
                t = fn.variable
                leaves.append((nid or self._targets.leaf_id(t), t))
                ids[k] = leaves[-1][0]
                continue
            if nid is None:
                continue
            fn_ids[fn] = nid
            self.handles.append(fn.register_prehook(self._collector(nid)))
        # Output nodes show the gradient w.r.t. the forward's outputs.
        for out_id, t in zip(self._outputs, roots, strict=False):
            self.data[out_id] = t.detach()
            if t.grad_fn in fn_ids:
                self.handles.append(
                    t.grad_fn.register_prehook(self._collector(out_id, t.output_nr))
                )
        if with_module:
            in_graph = {id(t) for _, t in leaves}
            leaves += [
                (self._targets.leaf_id(p), p)
                for p in self._targets.all_leaves()
                if id(p) not in in_graph
            ]
        self.step_leaves = leaves
        if trace:
            self.trace = BackwardTrace(order, ids, forward)

    def _collector(self, nid: str, slot: int = 0) -> Callable[[tuple], None]:
        def collect(grad_outputs: tuple) -> None:
            try:
                if not self.sampling:
                    if not self._on_first():
                        return
                    self.sampling = True
                g = grad_outputs[slot] if slot < len(grad_outputs) else None
                if g is not None:
                    self.grads[nid] = g.detach()
            except Exception as err:
                self._on_error(err)

        return collect
