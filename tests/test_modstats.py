"""Collapsed modules carry their gradients: per-module aggregates against torch's own norms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradwidget as gw


class Gated(nn.Module):
    """A layer with a parameter whose gradient is exactly zero (multiplied by 0)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.unused_gate = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return torch.tanh(self.lin(x)) + 0.0 * self.unused_gate


def test_module_aggregates_equal_torch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), Gated(), nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = gw.GradWidget(model, example_input=x, depth=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    outs = {}

    def keep(path):
        def hook(m, i, o):
            o.retain_grad()
            outs[path] = o

        return hook

    hooks = [m.register_forward_hook(keep(p)) for p, m in model.named_modules() if p]
    with w.watch(model, every=0):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
    for h in hooks:
        h.remove()
    agg = w.module_stats()
    params = dict(model.named_parameters())
    for path in ("0", "1", "1.lin", "2"):
        mine = {n: p for n, p in params.items() if n.startswith(f"{path}.")}
        row = agg[path]
        grads = [p.grad for p in mine.values()]
        # The largest member norm: the module output's gradient (the incoming gradient of its
        # last op) or a parameter's, all read from torch itself.
        torch_max = max([g.norm().item() for g in grads] + [outs[path].grad.norm().item()])
        assert row["max_norm"] == pytest.approx(torch_max, rel=1e-5), path
        assert row["params"] == len(mine)
        assert row["numel"] == sum(p.numel() for p in mine.values())
        total = torch.cat([g.reshape(-1) for g in grads]).norm().item()
        assert row["grad_norm"] == pytest.approx(total, rel=1e-5)
        assert row["zero"] == sum(int((g == 0).all()) for g in grads)
        assert row["nonfinite"] == 0
        dw = torch.cat([(params[n].detach() - before[n]).reshape(-1) for n in mine])
        w1 = torch.cat([params[n].detach().reshape(-1) for n in mine])
        assert row["update_ratio"] == pytest.approx((dw.norm() / w1.norm()).item(), rel=1e-5)
        assert row["mean_norm"] <= row["max_norm"]
    assert agg["1"]["zero"] == 1  # unused_gate
    assert agg["1"]["params"] == 3


def test_nonfinite_parameters_are_counted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(8, 4)
    w = gw.GradWidget(model, example_input=x)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with w.watch(model, every=0, trace="off"):
        model(x).sum().backward()
    agg = w.module_stats()
    # NaN in 0.weight: its own gradient stays finite (the forward NaN reaches 0.bias's and
    # 2.*'s); torch says which parameter gradients hold NaN.
    bad = {n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()}
    for path in ("0", "2"):
        assert agg[path]["nonfinite"] == sum(n.startswith(f"{path}.") for n in bad)
    assert math.isnan(agg["1"]["max_norm"]) or agg["1"]["nodes"] >= 1
    assert w.module_stats() == agg  # reading it changes nothing
