"""Comparing two runs: per-node log-ratios of gradient norms at the same step, against torch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradwidget as gw


def test_two_runs_compared_at_the_same_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(64, 2), torch.randn(64, 1)
    w = gw.GradWidget(model, example_input=x)
    w.optimizer = "SGD"
    w.lr = 1e-2
    norms: list[dict[str, float]] = []

    def step(opt):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        norms.append({f"leaf:{n}": p.grad.norm().item() for n, p in model.named_parameters()})
        opt.step()
        return loss

    w.watch(model, every=0)
    w.train(step, steps=6)
    a_norms, norms[:] = list(norms), []
    w.lr = 0.3  # a rerun from the same start, in a worker thread
    assert w.wait(60)
    b_norms = list(norms)
    run_a, run_b = (r["id"] for r in w.runs)
    for k in (1, 3, 6):
        got = w.compare(run_a, run_b, step=k)
        for nid in a_norms[k - 1]:
            want = math.log10(a_norms[k - 1][nid] / b_norms[k - 1][nid])
            assert got[nid] == pytest.approx(want, abs=1e-5), (k, nid)
        assert any("Backward" in nid for nid in got)  # intermediates too
    # Same start: step 1's gradients are equal, later ones differ (lr 1e-2 vs 0.3).
    assert all(abs(v) < 1e-5 for v in w.compare(run_a, run_b, step=1).values())
    assert w.compare(run_a, run_b) == w.compare(run_a, run_b, step=6)  # the latest common
    # The graph's coloring through the synced trait.
    w.compare_runs = [run_a, run_b]
    assert w.grad_compare["step"] == 6 and w.grad_compare["runs"] == [run_a, run_b]
    assert w.grad_compare["ratios"]["leaf:0.weight"] == pytest.approx(
        w.compare(run_a, run_b)["leaf:0.weight"]
    )
    w.compare_runs = []
    assert w.grad_compare == {}
    with pytest.raises(ValueError, match="No gradients of run 99"):
        w.compare(run_a, 99)
    with pytest.raises(ValueError, match="not sampled in both"):
        w.compare(run_a, run_b, step=7)
    w.compare_runs = [run_a, 99]
    assert "No gradients of run 99" in w.grad_compare["error"]
    w.unwatch()
