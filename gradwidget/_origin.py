"""Where a non-finite gradient starts: one traced step's backward (and forward), exactly.

When a sample holds a NaN/Inf gradient the watcher *traces* the next sampled step:

* **Backward**: a post-hook on every op node of that step's graph sees what flows in
  (``grad_outputs``) and what the node sends to each of its inputs (``grad_inputs``). The
  first node, in the order the engine ran them, whose incoming gradients are all finite and
  whose outgoing ones are not is where the backward first made a non-finite value.
* **Forward** (a watched module): a ``TorchFunctionMode`` over the module's forward notes,
  for the autograd node behind each torch call's output, whether that output holds NaN/Inf
  and whether a tensor input without a gradient (data) did. When the backward origin's
  inputs were already non-finite in the forward, the non-finite values are followed upstream
  to the node whose own inputs were finite: the op that made them, or a parameter holding
  NaN/Inf (or the op that read non-finite data).

Why not the per-node norms every sample already has: a node's incoming gradient is the sum
over all its consumers, so a NaN norm cannot say which consumer sent it, and a norm cannot
tell a NaN the backward made from one the forward already held. The trace costs one
finiteness check per node and per op of one step, and only after a NaN/Inf was seen. A node
made inside one torch call that the mode sees as a whole (``F.multi_head_attention_forward``)
inherits that call's verdict: the origin is then that call's output node.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from ._autograd import type_info
from ._graph import Graph


def _bad(t: torch.Tensor) -> bool:
    flag = _bad_flag(t)
    return False if flag is None else bool(flag)


def _bad_flag(t: torch.Tensor) -> torch.Tensor | None:
    """A 0-d bool tensor on ``t``'s device, True when ``t`` holds NaN/Inf (no host sync);
    None for tensors that cannot (integers, empty)."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return None
    return ~torch.isfinite(t.detach()).all()


def _to_bools(flags: list[torch.Tensor | None]) -> list[bool]:
    """Device flags to Python bools: one host copy per device, not one per flag."""
    out = [False] * len(flags)
    groups: dict[torch.device, list[int]] = {}
    for i, f in enumerate(flags):
        if f is not None:
            groups.setdefault(f.device, []).append(i)
    for idx in groups.values():
        for i, v in zip(idx, torch.stack([flags[i] for i in idx]).tolist(), strict=True):
            out[i] = bool(v)
    return out


class ForwardCheck(TorchFunctionMode):
    """Notes which autograd nodes' forward outputs hold NaN/Inf (one traced forward)."""

    def __init__(self) -> None:
        super().__init__()
        #: autograd node -> (output holds NaN/Inf, a data input does), as device flags until
        #: :meth:`resolve` (no host sync per op in the user's forward)
        self.flags: dict[Any, tuple[Any, Any]] = {}
        #: after :meth:`resolve`: autograd node -> its forward output held NaN/Inf
        self.bad: dict[Any, bool] = {}
        #: nodes whose torch call read a non-finite tensor that has no gradient (data)
        self.data_bad: set[Any] = set()

    def resolve(self) -> None:
        """Turn the forward's device flags into :attr:`bad` and :attr:`data_bad`."""
        if not self.flags:
            return
        fns = list(self.flags)
        got = _to_bools([f for fn in fns for f in self.flags[fn]])
        for k, fn in enumerate(fns):
            self.bad[fn] = got[2 * k]
            if got[2 * k] and got[2 * k + 1]:
                self.data_bad.add(fn)
        self.flags = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        with contextlib.suppress(Exception):  # a check must never break the user's forward
            self._note(out, args, kwargs)
        return out

    def _note(self, out: Any, args: Any, kwargs: Any) -> None:
        data: Any = False
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(o, torch.Tensor) or o.grad_fn is None or o.grad_fn in self.flags:
                continue
            if data is False:  # once per call: do its inputs without a gradient hold NaN/Inf
                data = None
                for a in tree_leaves((args, kwargs or {})):
                    if isinstance(a, torch.Tensor) and not a.requires_grad:
                        f = _bad_flag(a)
                        if f is not None and f.device == o.device:
                            data = f if data is None else data | f
            self.flags[o.grad_fn] = (_bad_flag(o), data)


class ForwardTrace:
    """A module's forwards run under a :class:`ForwardCheck` until :meth:`remove`."""

    def __init__(self, module: torch.nn.Module):
        self.check: ForwardCheck | None = None  # the latest forward's
        self._on = False
        self.handles = [
            module.register_forward_pre_hook(self._enter),
            module.register_forward_hook(self._exit, always_call=True),
        ]

    def _enter(self, module: Any, args: Any) -> None:
        if self._on or torch._C._current_graph_task_id() != -1:
            return  # nested call, or checkpointing recomputing the forward in a backward
        self.check = ForwardCheck()
        self.check.__enter__()
        self._on = True

    def _exit(self, module: Any, args: Any, out: Any) -> None:
        if self._on and self.check is not None:
            self._on = False
            self.check.__exit__(None, None, None)

    def remove(self) -> None:
        self._exit(None, None, None)
        for h in self.handles:
            h.remove()
        self.handles = []


class BackwardTrace:
    """Post-hooks on one step's op nodes and what they saw, in the engine's order.

    Parameters
    ----------
    order : list
        The step's autograd nodes in forward order (:func:`gradwidget._autograd.walk`).
    ids : list
        The drawn node id of each (None where the step's graph did not match the drawing).
    forward : ForwardCheck or None
        The traced forward of this step, when the module's forward could be seen.
    """

    def __init__(self, order: list[Any], ids: list[str | None], forward: ForwardCheck | None):
        self.order = order
        self.ids = dict(zip(order, ids, strict=True))
        self.forward = forward
        self.handles: list[Any] = []
        #: (node, incoming all finite, outgoing all finite, outgoing has NaN), device bools
        self.events: list[tuple[Any, Any, Any, Any]] = []
        for fn in order:
            if not type_info(fn).is_accumulate:
                self.handles.append(fn.register_hook(self._hook(fn)))

    def _hook(self, fn: Any):
        def post(grad_inputs: tuple, grad_outputs: tuple) -> None:
            try:
                ins = [g for g in grad_outputs if g is not None]
                outs = [g for g in grad_inputs if g is not None]
                self.events.append((fn, _all_finite(ins), _all_finite(outs), _any_nan(outs)))
            except Exception:  # never break the user's backward
                pass

        return post

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def locate(self, graph: Graph) -> dict[str, Any] | None:
        """The origin (see the module docstring), or None when this step stayed finite."""
        self.remove()
        events, self.events = self.events, []
        if not events:
            return None
        got = _to_bools([f for ev in events for f in ev[1:]])
        flags = [got[3 * k : 3 * k + 3] for k in range(len(events))]
        first = next(
            (k for k, (fin_in, fin_out, _) in enumerate(flags) if fin_in and not fin_out), None
        )
        outside = first is None
        if outside:
            # NaN/Inf flowed in from outside the traced graph (the loss after the module's
            # output): only the forward can say where it started.
            first = next((k for k, (fin_in, _, _) in enumerate(flags) if not fin_in), None)
            if first is None:
                return None
        fn = events[first][0]
        value = "NaN" if flags[first][2] else "Inf"
        kind = "backward"
        bad = self._forward_bad()
        if outside and not (bad and bad.get(fn)):
            return None
        if bad is not None:
            cur = fn
            while True:
                ups = [c for c, _ in cur.next_functions if c is not None and bad.get(c)]
                if not ups:
                    break
                cur = ups[0]
            if cur is not fn or bad.get(fn):
                kind = "forward"
            if type_info(cur).is_accumulate:
                kind = "leaf"
            elif self.forward is not None and cur in self.forward.data_bad:
                kind = "data"
            fn = cur
        nid = self.ids.get(fn)
        if nid is None or nid not in graph:
            return None
        node = graph[nid]
        return {
            "node": nid,
            "kind": kind,
            "value": value,
            "op": node.op,
            "name": node.name or node.label.split("\n", 1)[0],
            "module": node.module,
            "source": node.source,
            "path": path_to_output(graph, nid),
        }

    def _forward_bad(self) -> dict[Any, bool] | None:
        """Per node of the step: did its forward value hold NaN/Inf (None: not traced).

        Seen nodes say it themselves, leaves are read, and a node the mode did not see
        (made inside a bigger call, or outside the module) is non-finite when an input is.
        """
        if self.forward is None:
            return None
        self.forward.resolve()
        seen = self.forward.bad
        out: dict[Any, bool] = {}
        for fn in self.order:  # forward order: every node after its inputs
            if type_info(fn).is_accumulate:
                out[fn] = _bad(fn.variable.detach())
            elif fn in seen:
                out[fn] = seen[fn]
            else:
                out[fn] = any(out.get(c, False) for c, _ in fn.next_functions if c is not None)
        return out


def _floats(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t for t in ts if (t.is_floating_point() or t.is_complex()) and t.numel()]


def _all_finite(ts: list[torch.Tensor]) -> torch.Tensor:
    """One device flag: every value of every tensor is finite (on the first's device)."""
    fs = _floats(ts)
    if not fs:
        return torch.tensor(True)
    flag = torch.isfinite(fs[0]).all()
    for t in fs[1:]:
        flag = flag & torch.isfinite(t).all().to(flag.device)
    return flag


def _any_nan(ts: list[torch.Tensor]) -> torch.Tensor:
    fs = _floats(ts)
    if not fs:
        return torch.tensor(False)
    flag = torch.isnan(fs[0]).any()
    for t in fs[1:]:
        flag = flag | torch.isnan(t).any().to(flag.device)
    return flag


def path_to_output(graph: Graph, nid: str) -> list[str]:
    """Node ids from an output down to ``nid`` along the graph's edges (shortest path)."""
    succ: dict[str, list[str]] = {}
    for src, dst in graph.edges:
        succ.setdefault(src, []).append(dst)
    prev: dict[str, str | None] = {nid: None}
    todo = [nid]
    end = None
    while todo and end is None:
        nxt = []
        for u in todo:
            if graph[u].kind == "output":
                end = u
                break
            for v in succ.get(u, ()):
                if v not in prev:
                    prev[v] = u
                    nxt.append(v)
        todo = nxt
    if end is None:  # no output drawn downstream: the path of the nodes reached last
        end = todo[-1] if todo else nid
    path = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = prev.get(cur)
    return path
