"""Where a NaN/Inf gradient starts: graphs whose origin is known, checked against torch."""

from __future__ import annotations

import itertools
import re
import warnings

import pytest
import torch
from torch import nn

import gradwidget as gw
from gradwidget._origin import path_to_output
from gradwidget._watch import Watcher


def anomaly_op(loss: torch.Tensor) -> str:
    """The backward function torch's own anomaly mode blames for the first NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomaly mode's own "enabled" / "detected" notes
        with torch.autograd.detect_anomaly(check_nan=True), pytest.raises(RuntimeError) as err:
            loss.backward()
    return re.search(r"Function '(\w+)' returned nan", str(err.value)).group(1)


def run(w, model, step, opt=None):
    """One step under ``watch(every=0, trace="always")``: the NaN step itself is traced."""
    with w.watch(model, every=0, trace="always") as watcher:
        if opt is not None:
            opt.zero_grad()
        step().backward()
        if opt is not None:
            opt.step()
        assert watcher.traces == 1
        origin = w.nonfinite_origin()
        lints = list(watcher.lints)
    assert watcher.hook_count == 0
    assert not model._forward_hooks and not model._forward_pre_hooks
    return origin, lints


class SqrtAtZero(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        h = self.lin(x)
        # sqrt's backward at 0 with a zero incoming gradient: 0 / (2 * sqrt(0)) = NaN
        return (torch.sqrt(h - h.detach()) * 0.0).sum() + h.sum()


def test_sqrt_at_zero_is_found_where_torch_anomaly_mode_finds_it():
    torch.manual_seed(0)
    model, x = SqrtAtZero(), torch.randn(4, 3)
    w = gw.GradWidget(model, example_input=x)
    origin, lints = run(w, model, lambda: model(x))
    assert origin == "SqrtBackward0#0"
    assert w.graph[origin].op == anomaly_op(model(x)) == "SqrtBackward0"
    (lint,) = [li for li in lints if li["code"] == "nonfinite"]
    assert lint["node"] == origin
    assert lint["message"].startswith("NaN gradient starts at SqrtBackward0, source line")
    assert "test_origin.py:" in lint["message"]
    info = w.grad_origin
    assert info["kind"] == "backward" and info["path"][0].startswith("output")
    assert info["path"][-1] == origin


class ZeroScale(nn.Module):
    """A norm-like layer dividing by a scale that is 0: inf in the forward."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.register_buffer("scale", torch.zeros(()))

    def forward(self, x):
        return self.weight * (x / self.scale)


def test_division_by_zero_deep_inside_a_transformer():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    )
    model[1].layers[1].norm1 = ZeroScale(16)
    x = torch.randn(2, 5, 8)
    # torch: that division's output is the first non-finite value of the forward.
    seen = []

    def note(path):
        def hook(m, i, o):
            out = o[0] if isinstance(o, tuple) else o
            seen.append((path, bool(torch.isfinite(out).all())))

        return hook

    containers = (nn.ModuleList, nn.TransformerEncoder, nn.TransformerEncoderLayer)
    hooks = [
        m.register_forward_hook(note(p))
        for p, m in model.named_modules()
        if p and not isinstance(m, containers)
    ]
    model(x)
    for h in hooks:
        h.remove()
    assert next(p for p, ok in seen if not ok) == "1.layers.1.norm1"
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    origin, lints = run(w, model, lambda: model(x).square().mean(), opt)
    node = w.graph[origin]
    assert (node.module, node.op) == ("1.layers.1.norm1", "DivBackward0")
    (lint,) = [li for li in lints if li["code"] == "nonfinite"]
    assert lint["message"].startswith(
        "NaN gradient starts at 1.layers.1.norm1 · DivBackward0, source line test_origin.py:"
    )
    assert w.grad_origin["kind"] == "forward"
    # The path from the output reaches it along drawn edges.
    path = w.grad_origin["path"]
    edges = set(w.graph.edges)
    assert all((b, a) in edges for a, b in itertools.pairwise(path))


def test_input_already_nan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x, y = torch.randn(6, 4), torch.randn(6, 1)
    w = gw.GradWidget(model, example_input=x)
    x[2, 1] = float("nan")
    origin, lints = run(w, model, lambda: nn.functional.mse_loss(model(x), y))
    assert (w.graph[origin].module, w.graph[origin].op) == ("0", "AddmmBackward0")
    assert w.grad_origin["kind"] == "data"
    # Without the forward trace, torch's anomaly mode blames the loss: the backward rule alone
    # would name the wrong op.
    assert anomaly_op(nn.functional.mse_loss(model(x), y)) == "MseLossBackward0"
    (lint,) = [li for li in lints if li["code"] == "nonfinite"]
    assert "the data it reads is already NaN/Inf" in lint["message"]


def test_parameter_already_nan_and_recovery():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(6, 4)
    w = gw.GradWidget(model, example_input=x)
    with torch.no_grad():
        model[2].weight[0, 3] = float("inf")
    with w.watch(model, every=0, trace="always") as watcher:
        model(x).sum().backward()
        assert w.nonfinite_origin() == "leaf:2.weight"
        assert w.grad_origin["kind"] == "leaf"
        with torch.no_grad():
            model[2].weight[0, 3] = 0.0
        model.zero_grad()
        model(x).sum().backward()
        assert w.nonfinite_origin() is None and w.grad_origin == {}
        assert not [li for li in watcher.lints if li["code"] == "nonfinite"]


def test_default_rate_traces_the_next_step_only():
    torch.manual_seed(0)
    model, x = SqrtAtZero(), torch.randn(4, 3)
    w = gw.GradWidget(model, example_input=x)
    with w.watch(model, every=60) as watcher:  # only forced samples: the first, the traced
        for _ in range(4):
            model.zero_grad()
            model(x).backward()
        assert watcher.traces == 1
        assert w.nonfinite_origin() == "SqrtBackward0#0"
    assert watcher.hook_count == 0 and not model._forward_pre_hooks


def test_finite_training_traces_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(6, 4)
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with w.watch(model, every=0) as watcher:
        for _ in range(3):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
        assert watcher.traces == 0 and w.nonfinite_origin() is None


def test_path_to_output_is_shortest():
    torch.manual_seed(0)
    a = torch.randn(3, requires_grad=True)
    b = a * 2
    out = (b.exp() + b).sum()
    g = gw.capture(out)
    leaf = next(n.id for n in g.nodes if n.kind == "leaf")
    path = path_to_output(g, leaf)
    assert g[path[0]].kind == "output" and path[-1] == leaf
    assert [g[p].op for p in path[1:-1]] == ["SumBackward0", "AddBackward0", "MulBackward0"]


def test_trace_modes():
    torch.manual_seed(0)
    model, x = SqrtAtZero(), torch.randn(4, 3)
    w = gw.GradWidget(model, example_input=x)
    with pytest.raises(ValueError, match="trace must be one of"):
        w.watch(model, trace="sometimes")
    with w.watch(model, every=0, trace="off") as watcher:
        for _ in range(3):
            model.zero_grad()
            model(x).backward()
        assert watcher.traces == 0 and w.nonfinite_origin() is None
        lint = next(li for li in watcher.lints if li["code"] == "nonfinite")
        assert "traced" not in lint["message"] and "detect_anomaly" in lint["advice"]


def test_parameters_only_watch_puts_no_forward_check_on_the_module():
    torch.manual_seed(0)
    model, x = SqrtAtZero(), torch.randn(4, 3)
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    watcher = Watcher(w.graph, model, every=0, intermediates=False)
    try:
        for _ in range(2):
            opt.zero_grad()
            model(x).backward()
            opt.step()
        assert any(li["code"] == "nonfinite" for li in watcher.lints)
        assert not model._forward_pre_hooks and not model._forward_hooks
        assert watcher.traces == 0
    finally:
        watcher.remove()
