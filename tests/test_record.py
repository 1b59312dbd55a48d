"""record(): module paths, source lines, saved tensors, outputs, and cleanup."""

from __future__ import annotations

import inspect
import os

import pytest
import torch
import torch.nn as nn
from torch.nn.modules import module as nn_module
from torch_reference import Square, check_against_torch, encoder

import gradwidget as gw

HERE = os.path.basename(__file__)


def hooks_and_modes() -> tuple[int, int, int]:
    return (
        len(nn_module._global_forward_pre_hooks),
        len(nn_module._global_forward_hooks),
        torch._C._len_torch_function_stack(),
    )


def test_transformer_module_paths_and_source_line():
    model = encoder()
    x = torch.randn(2, 5, 16)
    with gw.record(model) as rec:
        line = inspect.currentframe().f_lineno + 1
        loss = model(x).pow(2).mean()
    g = rec.graph_of(loss)
    check_against_torch(g, loss)
    op_modules = {n.module for n in g.of_kind("op")}
    assert {"layers.0.self_attn", "layers.1.linear1", "layers.0.norm1"} <= op_modules
    assert None in op_modules  # pow/mean ran outside any module
    assert g.modules["layers.0.self_attn"].type == "MultiheadAttention"
    assert g.modules["layers"].type == "ModuleList"
    attn_ops = [n for n in g.of_kind("op") if n.module == "layers.0.self_attn"]
    assert attn_ops and all(n.id.startswith("layers.0.self_attn/") for n in attn_ops)
    # torch's own modules are skipped: the line is the user's call.
    assert {n.source for n in g.of_kind("op")} == {f"{HERE}:{line}"}
    # Parameters sit in their module and are named by their dotted path.
    leaf = g["leaf:layers.0.linear1.weight"]
    assert leaf.module == "layers.0.linear1" and leaf.shape == (32, 16)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.act = nn.Tanh()

    def forward(self, x):
        h = self.fc(x)  # line A
        return self.act(h) * 2  # line B


def test_source_is_the_users_own_module_line():
    torch.manual_seed(0)
    net = Net()
    src = inspect.getsource(Net.forward).splitlines()
    first = inspect.getsourcelines(Net.forward)[1]
    line_a = first + next(i for i, s in enumerate(src) if "line A" in s)
    line_b = first + next(i for i, s in enumerate(src) if "line B" in s)
    with gw.record() as rec:  # no module: the first module called is the root
        out = net(torch.randn(5, 3))
    g = rec.graph
    by_op = {n.op: n for n in g.of_kind("op")}
    assert by_op["AddmmBackward0"].source == f"{HERE}:{line_a}"
    assert by_op["AddmmBackward0"].module == "fc"
    assert by_op["TanhBackward0"].source == f"{HERE}:{line_b}"
    assert by_op["MulBackward0"].module is None  # in Net itself: the root has no path
    assert by_op["AddmmBackward0"].shape == (5, 4)
    assert g.of_kind("output")[0].shape == out.shape


def test_saved_tensors_are_recorded_before_backward_frees_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    x = torch.randn(4, 8)
    with gw.record(model) as rec:
        loss = model(x).sigmoid().mean()
    loss.backward()  # frees saved tensors
    with pytest.raises(ValueError, match="retain_graph"):
        gw.capture(loss)
    g = rec.graph_of(loss)  # still complete: recorded during forward
    check_against_torch(g, loss)
    by_op = {n.op: n for n in g.of_kind("op")}
    relu = by_op["ReluBackward0"]
    assert [(s.attr, s.shape, s.dtype, s.nbytes) for s in relu.saved] == [
        ("result", (4, 16), "float32", 4 * 16 * 4)
    ]
    sig = by_op["SigmoidBackward0"]
    assert sig.saved[0].shape == (4, 1) and sig.saved_bytes == 16
    assert g.saved_bytes >= relu.saved_bytes + sig.saved_bytes
    saved_nodes = rec.graph_of(loss, saved=True).of_kind("saved")
    assert len(saved_nodes) == sum(len(n.saved) for n in g.of_kind("op"))


def test_graph_vs_graph_of():
    x = torch.randn(3, requires_grad=True)
    with gw.record() as rec:
        a = (x * 2).sum()
        b = x.exp().mean()
    both = rec.graph
    assert len(both.of_kind("output")) == 2
    check_against_torch(both, [a, b])
    only_a = rec.graph_of(a)
    check_against_torch(only_a, a)
    assert [n.name for n in only_a.of_kind("output")] == ["a"]
    assert rec.graph_of([a, b]).edges == both.edges  # a sequence works too


def test_ops_made_before_the_block_get_no_module_or_line():
    torch.manual_seed(0)
    lin = nn.Linear(3, 3)
    x = torch.randn(2, 3, requires_grad=True)
    pre = x.exp()  # before recording
    with gw.record(lin) as rec:
        out = lin(pre).sum()
    g = rec.graph_of(out)
    exp = next(n for n in g.of_kind("op") if n.op == "ExpBackward0")
    assert exp.source is None and exp.module is None
    assert exp.saved  # still read post hoc


def test_nothing_recorded_is_a_clear_error():
    with gw.record() as rec:
        torch.randn(3) * 2
    with pytest.raises(ValueError, match="requires grad"):
        _ = rec.graph
    with pytest.raises(TypeError, match=r"nn\.Module"):
        gw.record("model")


def test_record_cleans_up_even_when_the_block_raises():
    before = hooks_and_modes()
    model = encoder(1)
    with pytest.raises(RuntimeError, match="boom"), gw.record(model):
        model(torch.randn(1, 3, 16))
        assert hooks_and_modes() != before  # hooks and mode active inside
        raise RuntimeError("boom")
    assert hooks_and_modes() == before
    # An exception inside a module's forward too.
    bad = nn.Linear(3, 3)
    with pytest.raises(RuntimeError), gw.record(bad):
        bad(torch.randn(2, 4))  # wrong shape
    assert hooks_and_modes() == before
    with gw.record(model) as rec:
        loss = model(torch.randn(1, 3, 16)).sum()
    assert hooks_and_modes() == before
    check_against_torch(rec.graph_of(loss), loss)


def test_custom_function_is_recorded():
    x = torch.randn(4, requires_grad=True)
    with gw.record() as rec:
        y = Square.apply(x).sum()
    g = rec.graph_of(y)
    check_against_torch(g, y)
    sq = next(n for n in g.of_kind("op") if n.op == "SquareBackward")
    assert sq.source is not None and sq.saved[0].shape == (4,)
