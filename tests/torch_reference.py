"""What the tests compare gradwidget's graphs against: torch's own autograd graph.

Shared by the capture, record, DOT and Jacobian tests (pytest puts ``tests/`` on
``sys.path``). :func:`check_against_torch` walks ``grad_fn.next_functions`` independently
(breadth first, not gradwidget's walk); :class:`Square` is an old-style custom
``autograd.Function``; :func:`encoder` a small seeded ``nn.TransformerEncoder``.
"""

from __future__ import annotations

import collections

import torch
import torch.nn as nn

import gradwidget as gw

ACC = "torch::autograd::AccumulateGrad"


def torch_graph(outputs):
    """(reachable grad_fns, AccumulateGrad count, edge multiset named by op) from torch."""
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    seen, queue = set(), collections.deque()
    for t in outputs:
        if t.grad_fn is not None and t.grad_fn not in seen:
            seen.add(t.grad_fn)
            queue.append(t.grad_fn)
    while queue:
        fn = queue.popleft()
        for child, _ in fn.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                queue.append(child)

    def name(fn):
        return "leaf" if fn.name() == ACC else fn.name().rsplit("::", 1)[-1]

    edges = collections.Counter()
    for fn in seen:
        for child, _ in fn.next_functions:
            if child is not None:
                edges[(name(child), name(fn))] += 1
    for t in outputs:
        if t.grad_fn is not None:
            edges[(name(t.grad_fn), "output")] += 1
    n_acc = sum(1 for fn in seen if fn.name() == ACC)
    return seen, n_acc, edges


def check_against_torch(graph: gw.Graph, outputs) -> None:
    """Assert the gradwidget convention against torch's graph."""
    seen, n_acc, torch_edges = torch_graph(outputs)
    ops, leaves = graph.of_kind("op"), graph.of_kind("leaf")
    n_out = 1 if isinstance(outputs, torch.Tensor) else len(outputs)
    assert len(ops) == len(seen) - n_acc
    assert len(leaves) == n_acc
    assert len(graph.of_kind("output")) == n_out
    by_id = {n.id: n for n in graph.nodes}
    assert len(by_id) == len(graph.nodes), "ids must be unique"
    assert [n.index for n in graph.nodes] == list(range(len(graph.nodes)))

    def name(n):
        return n.op if n.kind == "op" else n.kind

    ours = collections.Counter(
        (name(by_id[a]), name(by_id[b])) for a, b in graph.edges if by_id[a].kind != "saved"
    )
    assert ours == torch_edges
    # Forward (topological) order: every edge goes from an earlier node to a later one.
    assert all(by_id[a].index < by_id[b].index for a, b in graph.edges)
    # Op names are the grad_fn names torch reports.
    want_ops = collections.Counter(fn.name().rsplit("::", 1)[-1] for fn in seen if fn.name() != ACC)
    assert collections.Counter(n.op for n in ops) == want_ops
    # Leaves carry their tensor's shape.
    want_shapes = collections.Counter(tuple(fn.variable.shape) for fn in seen if fn.name() == ACC)
    assert collections.Counter(n.shape for n in leaves) == want_shapes


class Square(torch.autograd.Function):
    """x * x, old-style (no setup_context): torch.func transforms refuse it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def encoder(layers: int = 2) -> nn.TransformerEncoder:
    """A seeded ``layers``-deep TransformerEncoder (d_model 16, 2 heads, no dropout)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
