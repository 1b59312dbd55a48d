"""The kept samples: bounded, in order, each equal to torch's gradient at its step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwidget as gw
from gradwidget import _optstep
from gradwidget._constants import STAT_COLUMNS
from gradwidget._history import History
from gradwidget._wire import encode_stats


def test_history_keeps_the_last_samples_with_torchs_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    norms = []
    with w.watch(model, every=0, history=5):
        for _ in range(8):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            norms.append({f"leaf:{n}": p.grad.norm().item() for n, p in model.named_parameters()})
            opt.step()
        kept = w.history
        assert len(kept) == 5
        n_nodes = len(kept[-1][2])
        assert w._history.nbytes == 5 * n_nodes * 4 * (len(STAT_COLUMNS) + 1)
    assert [step for step, _, _ in kept] == [4, 5, 6, 7, 8]  # optimizer steps
    times = [t for _, t, _ in kept]
    assert times == sorted(times)
    for step, _, stats in kept:
        for nid, norm in norms[step - 1].items():
            assert stats[nid]["norm"] == pytest.approx(norm, rel=1e-6)
            assert stats[nid]["nonfinite"] == 0
    # Intermediates too, and each sample's own values: the last one is stats()'s.
    assert any(nid.endswith("#0") for nid in kept[-1][2])
    latest = w.stats()
    for nid, s in kept[-1][2].items():
        assert s["norm"] == pytest.approx(latest[nid]["norm"], rel=1e-6)


def test_history_bounds():
    with pytest.raises(ValueError, match="history must be"):
        History(["a"], 0)
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    w = gw.GradWidget(model, example_input=torch.randn(3, 2))
    with pytest.raises(ValueError, match="history must be"):
        w.watch(model, history=0)
    assert w.watcher is None  # bad input changed nothing, and hooked nothing in
    assert _optstep.listening() == 0
    h = History(["a", "b"], 3)
    for k in range(10):
        row = {"index": 1, "norm": float(k), "nonfinite": 0, "numel": 4, "hist": None}
        h.add(k, float(k), encode_stats({"b": row}, k))
    assert [s for s, _, _ in h.items()] == [7, 8, 9]
    assert h.last_step == 9
    assert h.items()[-1][2]["b"]["norm"] == 9.0
    assert h.items()[-1][2]["b"]["numel"] == 4
    assert h.nbytes == 3 * 4 * (len(STAT_COLUMNS) + 1)
