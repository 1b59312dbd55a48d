"""DDP on 2 gloo ranks (127.0.0.1): every rank shows the all-reduced gradient it steps with."""

from __future__ import annotations

import pytest
import torch
from _ddp import run_ranks
from torch import nn


def _ranks_body(rank: int, world_size: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    import gradwidget as gw

    torch.manual_seed(0)  # the same starting weights on every rank
    model = DDP(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
    torch.manual_seed(100 + rank)  # but each rank its own data: local gradients differ
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    stepped: dict[str, float] = {}

    def spy(optimizer, args, kwargs):
        stepped.update({n: p.grad.norm().item() for n, p in model.named_parameters()})

    handle = register_optimizer_step_pre_hook(spy)
    out: dict = {"plain": [], "no_sync": []}
    with w.watch(every=0):
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            local = model.module[0].weight.grad.clone()  # already reduced: keep for comparison
            opt.step()
            st = w.stats()
            out["plain"].append({n: (st[f"leaf:{n}"]["norm"], stepped[n]) for n in stepped})
        out["local_ops"] = all(s.get("local") for s in st.values() if s["kind"] == "op")
        out["reduced_norm"] = local.norm().item()
        # Accumulation over two micro-batches without syncing the first.
        opt.zero_grad()
        with model.no_sync():
            nn.functional.mse_loss(model(x[:8]), y[:8]).backward()
        nn.functional.mse_loss(model(x[8:]), y[8:]).backward()
        opt.step()
        st = w.stats()
        out["no_sync"] = {n: (st[f"leaf:{n}"]["norm"], stepped[n]) for n in stepped}
        out["local_intermediates"] = w.grad_watch["local_intermediates"]
    handle.remove()
    return out


@pytest.mark.timeout(180)
def test_ddp_ranks_show_the_all_reduced_gradient():
    results = run_ranks(_ranks_body, world_size=2, timeout=150)
    for res in results:
        for step in res["plain"]:
            for name, (shown, used) in step.items():
                assert shown == pytest.approx(used, rel=1e-6), name
        for name, (shown, used) in res["no_sync"].items():
            assert shown == pytest.approx(used, rel=1e-6), name
        assert res["local_ops"] and res["local_intermediates"]
    # Identical on both ranks: the gradient every rank steps with.
    r0, r1 = results
    for a, b in zip(r0["plain"], r1["plain"], strict=True):
        assert {n: v[0] for n, v in a.items()} == pytest.approx({n: v[0] for n, v in b.items()})
    assert r0["reduced_norm"] == pytest.approx(r1["reduced_norm"])
