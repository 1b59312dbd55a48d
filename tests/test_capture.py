"""capture(): the graph checked against torch's own autograd graph, case by case.

Every graph is compared with an independent walk of ``grad_fn.next_functions``
(``torch_reference.check_against_torch``; breadth first, not gradwidget's walk):
``#op == #reachable grad_fn - #AccumulateGrad``, ``#leaf == #AccumulateGrad``, and the
multiset of edges, named by op, equals the one ``next_functions`` gives.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_reference import Square, check_against_torch

import gradwidget as gw


# ---- the cases the issue lists ---------------------------------------------------------------
def test_tutorial_graph_names_w_and_b_from_variables():
    x = torch.ones(5)
    y = torch.zeros(3)
    w = torch.randn(5, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    z = torch.matmul(x, w) + b
    loss = F.binary_cross_entropy_with_logits(z, y)
    g = gw.capture(loss)
    check_against_torch(g, loss)
    assert {n.name for n in g.of_kind("leaf")} == {"w", "b"}
    assert g["leaf:w"].shape == (5, 3) and g["leaf:b"].shape == (3,)
    (out,) = g.of_kind("output")
    assert out.name == "loss" and out.id == "output:loss" and out.shape == ()
    # Post-hoc op shapes come from the graph itself.
    add = next(n for n in g.of_kind("op") if n.op == "AddBackward0")
    assert add.shape == (3,) and add.dtype == "float32"
    assert "(3)" in add.label
    bce = next(n for n in g.of_kind("op") if n.op.startswith("BinaryCrossEntropyWithLogits"))
    assert bce.shape == () and bce.saved and bce.saved_bytes > 0
    assert g.saved_bytes > 0


def test_mlp_names_leaves_by_module_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    loss = model(torch.randn(16, 4)).pow(2).mean()
    g = gw.capture(loss, module=model)
    check_against_torch(g, loss)
    assert {n.name for n in g.of_kind("leaf")} == {n for n, _ in model.named_parameters()}
    assert g["leaf:0.weight"].module == "0"
    assert set(g.modules) == {"0", "2"} and g.modules["0"].type == "Linear"


def test_cnn_with_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    out = model(torch.randn(2, 3, 8, 8))
    loss = F.cross_entropy(out, torch.tensor([1, 2]))
    g = gw.capture(loss, module=model)
    check_against_torch(g, loss)
    bn = next(n for n in g.of_kind("op") if "BatchNorm" in n.op)
    assert bn.shape == (2, 8, 8, 8)
    assert any(s.shape == (2, 8, 8, 8) for s in bn.saved)  # the normalised input


def test_transformer_encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    loss = model(torch.randn(2, 5, 16)).sum()
    g = gw.capture(loss, module=model)
    check_against_torch(g, loss)
    assert len(g.of_kind("leaf")) == len(list(model.parameters()))


def test_lstm():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True)
    out, (h, _c) = lstm(torch.randn(3, 5, 4))
    loss = out.sum() + h.sum()
    g = gw.capture(loss, module=lstm)
    check_against_torch(g, loss)
    assert "weight_ih_l0" in {n.name for n in g.of_kind("leaf")}


def test_custom_autograd_function():
    x = torch.randn(4, requires_grad=True)
    y = Square.apply(x).sum()
    g = gw.capture(y)
    check_against_torch(g, y)
    node = next(n for n in g.of_kind("op") if n.op == "SquareBackward")
    assert node.label.startswith("Square")
    assert [s.shape for s in node.saved] == [(4,)]  # read from ctx.saved_tensors
    assert node.shape == (4,)


def test_double_backward():
    x = torch.randn(3, requires_grad=True)
    y = (x**3).sum()
    (gx,) = torch.autograd.grad(y, x, create_graph=True)
    z = (gx * x).sum()
    g = gw.capture(z)
    check_against_torch(g, z)
    assert len(g.of_kind("leaf")) == 1  # x, reached along several paths


def test_views_and_inplace_ops():
    x = torch.randn(4, 3, requires_grad=True)
    a = x * 2
    v = a[1:]
    v.mul_(3)  # in place on a view: a's history is rewritten
    a.add_(1)
    out = a.view(-1)
    g = gw.capture(out)
    check_against_torch(g, out)
    (node,) = g.of_kind("output")
    assert node.shape == (12,) and node.base_shape == (4, 3)
    assert "view of (4, 3)" in node.label


def test_inplace_change_of_saved_tensor_does_not_break_capture():
    x = torch.randn(3, requires_grad=True)
    y = x.sigmoid()  # saves its result
    z = y * 2
    y.mul_(2)  # backward would fail; capture still draws the graph
    g = gw.capture([z, y])
    check_against_torch(g, [z, y])


def test_parameter_used_twice():
    w = torch.randn(3, 3, requires_grad=True)
    x = torch.randn(2, 3)
    out = ((x @ w) @ w).sum()
    g = gw.capture(out)
    check_against_torch(g, out)
    (leaf,) = g.of_kind("leaf")
    assert leaf.name == "w"
    # One leaf node, two edges out of it (one per use).
    assert sum(1 for a, _ in g.edges if a == leaf.id) == 2


def test_shared_module_weights():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.Tanh(), lin)
    loss = model(torch.randn(2, 4)).sum()
    g = gw.capture(loss, module=model)
    check_against_torch(g, loss)
    assert {n.name for n in g.of_kind("leaf")} == {"0.weight", "0.bias"}


def test_several_outputs_share_their_subgraph():
    x = torch.randn(3, requires_grad=True)
    h = x.exp()
    a = h.sum()
    b = (h * 2).mean()
    g = gw.capture([a, b])
    check_against_torch(g, [a, b])
    assert [n.name for n in g.of_kind("output")] == ["a", "b"]
    assert sum(1 for n in g.of_kind("op") if n.op == "ExpBackward0") == 1
    assert len(gw.capture({"first": a, "second": b}).of_kind("output")) == 2


def test_non_scalar_output():
    x = torch.randn(4, 3, requires_grad=True)
    z = torch.tanh(x) * 2
    g = gw.capture(z)
    check_against_torch(g, z)
    assert g.of_kind("output")[0].shape == (4, 3)


def test_no_grad_and_detach_cut_the_graph():
    x = torch.randn(3, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    h = (x * 2).detach()
    with torch.no_grad():
        k = x * 3
    out = (h * w + k * w).sum()
    g = gw.capture(out)
    check_against_torch(g, out)
    assert [n.name for n in g.of_kind("leaf")] == ["w"]  # x is not reachable


def test_leaf_output_and_leaf_naming_by_shape_when_ambiguous():
    w = torch.randn(3, requires_grad=True)
    alias = w
    out = (w * 2).sum()
    g = gw.capture(out)
    (leaf,) = g.of_kind("leaf")
    assert alias is w and leaf.name is None  # two names: ambiguous, so by shape
    assert leaf.label == "leaf\n(3)" and leaf.id == "leaf#0"
    g2 = gw.capture(out, params={"weight": w})
    assert g2.of_kind("leaf")[0].name == "weight"
    # A leaf passed as an output: an output node and nothing to walk.
    g3 = gw.capture(w)
    assert [n.kind for n in g3.nodes] == ["output"] and g3.edges == []


def test_chain_of_100k_ops_has_no_recursion_error():
    limit = sys.getrecursionlimit()
    x = torch.randn(2, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0001
    g = gw.capture(y)
    assert len(g.of_kind("op")) == 100_000 and len(g.of_kind("leaf")) == 1
    assert len(g.edges) == 100_001
    assert g.to_dot().source.count("->") == 100_001
    assert sys.getrecursionlimit() == limit


CHAIN_FREE = """
import gc, torch, gradwidget as gw
def run(n, use_record):
    x = torch.randn(2, requires_grad=True)
    y = x
    if use_record:
        with gw.record() as rec:
            for _ in range(n):
                y = y * 1.0001
        return len(rec.graph_of(y))
    for _ in range(n):
        y = y * 1.0001
    return len(gw.capture(y))
assert run(150_000, False) == 150_002
gc.collect()
assert run(70_000, True) == 70_002
gc.collect()
print("freed")
"""


def test_deep_graph_is_freed_without_crashing():
    # torch frees a Python-touched graph recursively: without root-first release this
    # segfaults (C stack overflow) once the chain's output dies. Own process: a crash
    # must not take the test session down.
    done = subprocess.run(
        [sys.executable, "-c", CHAIN_FREE], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "freed"


def _fresh_pass(use_record: bool):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    x = torch.randn(2, 5, 16)
    if use_record:
        with gw.record(model) as rec:
            loss = model(x).pow(2).mean()
        return rec.graph_of(loss)
    loss = model(x).pow(2).mean()
    return gw.capture(loss, module=model)


@pytest.mark.parametrize("use_record", [False, True], ids=["capture", "record"])
def test_stable_ids_and_dot_across_identical_passes(use_record):
    g1, g2 = _fresh_pass(use_record), _fresh_pass(use_record)
    assert [n.id for n in g1.nodes] == [n.id for n in g2.nodes]
    assert g1.edges == g2.edges
    for kw in ({}, {"depth": 0}, {"depth": 9}, {"expand": ["layers.0"]}):
        assert g1.to_dot(**kw).source == g2.to_dot(**kw).source
    assert "0x" not in g1.to_dot(depth=9).source  # no addresses anywhere


def test_saved_nodes_option():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3, 2, requires_grad=True)
    loss = (x @ w).relu().sum()
    g = gw.capture(loss, saved=True)
    check_against_torch(g, loss)  # ops/leaves/edges unchanged by saved nodes
    saved = g.of_kind("saved")
    assert len(saved) == sum(len(n.saved) for n in g.of_kind("op")) > 0
    by_id = {n.id: n for n in g.nodes}
    for s in saved:
        (dst,) = [b for a, b in g.edges if a == s.id]
        assert by_id[dst].kind == "op" and s.id.startswith(dst + "/saved:")
        attr = s.id.rsplit("/saved:", 1)[1]
        (info,) = [x for x in by_id[dst].saved if x.attr == attr]
        assert (s.shape, s.dtype, s.name) == (info.shape, info.dtype, attr)
        assert s.index < by_id[dst].index and s.saved_bytes == 0
    relu = next(n for n in g.of_kind("op") if n.op == "ReluBackward0")
    assert any(s.name == "result" and s.shape == (4, 2) for s in saved if s.id.startswith(relu.id))
    assert gw.capture(loss).of_kind("saved") == []


# ---- bad input ----------------------------------------------------------------------------
def test_errors_are_clear():
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        gw.capture(3)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        gw.capture("loss")
    with pytest.raises(ValueError, match="empty"):
        gw.capture([])
    t = torch.randn(3, requires_grad=True) * 2
    with pytest.raises(TypeError, match="Output 1 is a str"):
        gw.capture([t, "x"])
    with pytest.raises(ValueError, match=r"requires_grad=True"):
        gw.capture(torch.randn(3))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        gw.capture(t, module="model")
    with pytest.raises(TypeError, match="mapping"):
        gw.capture(t, params=[t])


def test_freed_graph_says_retain_graph():
    x = torch.randn(3, requires_grad=True)
    loss = (x.exp() * x).sum()
    loss.backward()
    with pytest.raises(ValueError, match="retain_graph"):
        gw.capture(loss)
    loss2 = (x.exp() * x).sum()
    loss2.backward(retain_graph=True)
    check_against_torch(gw.capture(loss2), loss2)


def test_use_rank_orders_parameters_layer_by_layer():
    """The gradient-flow view lists parameters in the order the forward pass used them."""
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    with gw.record(model) as rec:
        out = model(torch.randn(4, 2))
    graph = rec.graph_of(out)
    rank = graph.use_rank()
    leaves = sorted(graph.of_kind("leaf"), key=lambda n: rank[n.id])
    assert [n.name for n in leaves] == [name for name, _ in model.named_parameters()]
    assert all(rank[n.id] == n.index for n in graph.nodes if n.kind != "leaf")
