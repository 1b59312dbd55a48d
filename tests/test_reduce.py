"""Statistics of tensors split over 2 gloo ranks equal those of the whole tensor (torch)."""

from __future__ import annotations

import math

import pytest
import torch
from _ddp import run_ranks

from gradwidget._stats import tensor_stats


def _wholes() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    nan = torch.randn(40, generator=g)
    nan[[3, 30]] = float("nan")
    nan[7] = float("inf")
    return [
        torch.randn(64, 8, generator=g),  # an intermediate's gradient over the global batch
        torch.randn(10, generator=g) * 1e-3 + 5.0,  # |mean| >> std: the variance pass
        torch.full((6,), 0.25),  # no range: histc's widened one
        nan,
        torch.randn(9, generator=g),  # rank 1 holds none of it
    ]


def _part(t: torch.Tensor, rank: int, index: int) -> torch.Tensor | None:
    if index == 4:
        return t if rank == 0 else None
    half = t.shape[0] // 2
    return t[:half] if rank == 0 else t[half:]


def _ranks_body(rank: int, world_size: int) -> dict:
    from gradwidget._reduce import reduce_stats

    parts = [_part(t, rank, i) for i, t in enumerate(_wholes())]
    full, decision = reduce_stats(parts, level="full", decision=[7.0, 1.0] if rank == 0 else [0, 0])
    norm, _ = reduce_stats(parts, level="norm")
    return {"full": full, "norm": norm, "decision": decision}


def _both(rank: int, world_size: int) -> dict:
    return {"stats": _ranks_body(rank, world_size), "schedule": _schedule_body(rank, world_size)}


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    """One launch of 2 gloo ranks for both tests (spawning ranks takes most of the time)."""
    return run_ranks(_both, world_size=2, timeout=100)


@pytest.mark.timeout(120)
def test_reduced_statistics_equal_the_whole_tensors(ranks):
    results = [r["stats"] for r in ranks]
    for res in results:
        assert res["decision"] == [7.0, 1.0]  # rank 0's, on every rank
        for whole, got, cheap in zip(_wholes(), res["full"], res["norm"], strict=True):
            fin = whole[torch.isfinite(whole)]
            f = fin.double()
            want = {
                "norm": f.norm().item(),
                "mean": f.mean().item(),
                "std": f.std().item(),
                "min": f.min().item(),
                "max": f.max().item(),
                "absmean": f.abs().mean().item(),
            }
            assert got["nonfinite"] == whole.numel() - fin.numel()
            assert got["numel"] == whole.numel()
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-8, abs=1e-12), key
            # The same numbers as the local watcher's statistics of the whole tensor.
            local = tensor_stats([whole])[0]
            assert {k: got[k] for k in want} == pytest.approx({k: local[k] for k in want})
            lo, hi = fin.min().item(), fin.max().item()
            if lo == hi:
                lo, hi = lo - 1, hi + 1
            assert got["hist"] == torch.histc(fin, bins=32, min=lo, max=hi).tolist()
            assert cheap["norm"] == pytest.approx(want["norm"], rel=1e-9)
            assert cheap["nonfinite"] == got["nonfinite"]
            assert math.isnan(cheap["mean"]) and cheap["hist"] is None
    assert results[0]["full"] == results[1]["full"]


def _schedule_body(rank: int, world_size: int) -> dict:
    import time

    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import gradwidget as gw
    from gradwidget import _shared

    _shared.MIN_PERIOD = 0.05  # samples a few steps apart in a short run
    torch.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
    torch.manual_seed(100 + rank)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    group = dist.new_group(backend="gloo")
    with gw.record(model) as rec:
        out = model(x)
    graph = rec.graph_of(out)
    nn.functional.mse_loss(out, y).backward()
    opt.step()
    got: list[dict] = []
    tier = _shared.SharedTier(
        graph, model, group, every=0.01, max_overhead=0.03, on_sample=got.append, on_error=print
    )
    calls = []
    original = dist.all_reduce
    dist.all_reduce = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    steps = []
    try:
        for _ in range(60):
            before, seen = len(calls), len(got)
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            steps.append((len(calls) - before, len(got) - seen))
            time.sleep(0.005 * (1 + rank))  # rank 1 slower: rank 0's clock decides alone
    finally:
        dist.all_reduce = original
        tier.remove()
    return {"steps": steps, "norms": [s["module.0/AddmmBackward0#0"]["norm"] for s in got]}


@pytest.mark.timeout(120)
def test_ranks_sample_the_same_forwards_with_no_collective_between_samples(ranks):
    r0, r1 = (r["schedule"] for r in ranks)
    assert r0["steps"] == r1["steps"]  # the same forwards, the same collectives
    sampled = [n for _, n in r0["steps"]]
    assert sum(sampled) >= 2 and sampled.count(0) >= sum(sampled)  # samples, with gaps
    assert all((calls > 0) == bool(n) for calls, n in r0["steps"])
    assert r0["norms"] == r1["norms"]  # one reduced value, on both ranks
