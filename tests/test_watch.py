"""Live gradients: statistics, hooks lifecycle, throttle and lint (no browser)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from torch import nn

import gradwidget as gw
from gradwidget._stats import tensor_stats
from gradwidget._steps import align
from gradwidget._watch import Watcher
from gradwidget._wire import decode_stats


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))


@pytest.fixture
def setup():
    model = mlp()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = gw.GradWidget(model, example_input=x)
    yield model, x, y, w
    w.unwatch()


def train(model, x, y, steps, *, zero=True, set_to_none=True, lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        if zero:
            opt.zero_grad(set_to_none=set_to_none)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return opt


def hook_count(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    for p in model.parameters():
        n += len(p._backward_hooks or {}) + len(p._post_accumulate_grad_hooks or {})
    return n


# ---- statistics ------------------------------------------------------------------------------
def test_stats_equal_torch():
    g = torch.randn(7, 9)
    (s,) = tensor_stats([g])
    assert s["norm"] == pytest.approx(g.norm().item(), rel=1e-6)
    assert s["mean"] == pytest.approx(g.mean().item(), rel=1e-6, abs=1e-7)
    assert s["std"] == pytest.approx(g.std().item(), rel=1e-6)
    assert s["min"] == g.min().item() and s["max"] == g.max().item()
    assert s["absmean"] == pytest.approx(g.abs().mean().item(), rel=1e-6)
    assert s["hist"] == torch.histc(g, bins=32).tolist()
    assert s["nonfinite"] == 0 and s["numel"] == 63
    assert s["values"] == g.reshape(-1).tolist()
    (big,) = tensor_stats([torch.randn(65)])
    assert big["values"] is None


def test_stats_equal_torch_on_mixed_tensors():
    torch.manual_seed(1)
    ts = [
        torch.randn(7, 9),
        torch.randn(1),
        torch.full((5,), 2.5),  # constant: histc widens the range to [v - 1, v + 1]
        torch.randn(300).double() * 1e-8,
        torch.randn(4, 4).t(),  # a transposed view
        torch.randn(64).half(),
        torch.tensor([1.0, float("inf"), -3.0]),
        torch.randn(70_000),
        torch.randn(0),
        (torch.rand(1000) * 1e6).round(),  # values on bin edges
    ]
    for t, s in zip(ts, tensor_stats(ts), strict=True):
        x = t.reshape(-1)
        x = x.float() if x.dtype == torch.half else x
        fin = x[torch.isfinite(x)]
        assert s["nonfinite"] == x.numel() - fin.numel() and s["numel"] == x.numel()
        if not fin.numel():
            assert math.isnan(s["norm"])
            continue
        assert s["norm"] == pytest.approx(fin.double().norm().item(), rel=1e-9)
        assert s["mean"] == pytest.approx(fin.double().mean().item(), rel=1e-9, abs=1e-300)
        std = fin.double().std().item() if fin.numel() > 1 else 0.0
        assert s["std"] == pytest.approx(std, rel=1e-6, abs=1e-300)
        assert s["min"] == fin.min().item() and s["max"] == fin.max().item()
        assert s["hist"] == torch.histc(fin, bins=32).tolist(), t.shape


def test_single_element_std_is_zero_without_warning():
    with _no_warnings():
        (s,) = tensor_stats([torch.tensor([3.0])])
    assert s["std"] == 0.0 and s["norm"] == 3.0


def test_nonfinite_counted_and_stats_over_finite_values():
    g = torch.tensor([1.0, float("nan"), -2.0, float("inf"), 4.0])
    (s,) = tensor_stats([g])
    fin = g[torch.isfinite(g)]
    assert s["nonfinite"] == 2
    assert s["norm"] == pytest.approx(fin.norm().item())
    assert s["hist"] == torch.histc(fin, bins=32).tolist()
    (all_bad,) = tensor_stats([torch.full((3,), float("nan"))])
    assert all_bad["nonfinite"] == 3 and sum(all_bad["hist"]) == 0


def test_widget_stats_match_the_real_grads(setup):
    model, x, y, w = setup
    w.watch(every=0)
    train(model, x, y, 1)
    st = w.stats()
    for name, p in model.named_parameters():
        s = st[f"leaf:{name}"]
        assert s["name"] == name and s["kind"] == "leaf"
        assert s["norm"] == pytest.approx(p.grad.norm().item(), rel=1e-5)
        assert s["max"] == pytest.approx(p.grad.max().item())
        assert s["hist"] == torch.histc(p.grad, bins=32).tolist()
        assert s["weight_norm"] > 0
    ops = [n for n in w.graph.nodes if n.kind == "op"]
    assert all(n.id in st for n in ops), "every intermediate gets stats"
    for need in ("name", "kind", "op", "norm", "mean", "std", "min", "max", "nonfinite", "hist"):
        assert all(need in s for s in st.values())
    # The output node carries d loss / d output, and its data.
    model.zero_grad()
    out = model(x)
    out.retain_grad()
    nn.functional.mse_loss(out, y).backward()
    st = w.stats()
    assert st["output#0"]["values"] == pytest.approx(out.grad.reshape(-1).tolist(), rel=1e-5)
    assert st["output#0"]["data"] == pytest.approx(out.detach().reshape(-1).tolist())


def test_intermediate_grad_matches_retain_grad():
    torch.manual_seed(1)
    a = torch.randn(5, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    h = (a * b).tanh()
    loss = (h * 3).sum()
    w = gw.GradWidget(loss)
    w.watch(loss)  # a non-leaf: its graph is watched for its backward
    h.retain_grad()
    loss.backward()
    st = w.stats()
    tanh = next(n for n in w.graph.nodes if n.op == "TanhBackward0")
    assert st[tanh.id]["values"] == pytest.approx(h.grad.tolist())
    w.unwatch()


def test_wire_round_trip_and_only_changed_nodes(setup):
    model, x, y, w = setup
    w.watch(every=0)
    train(model, x, y, 2)
    msg = decode_stats(w.grad_stats)
    index = {n.id: n.index for n in w.graph.nodes}
    st = w.stats()
    assert msg["step"] == w.watcher.samples
    assert set(msg["rows"]) == {index[k] for k in st}
    row = msg["rows"][index["leaf:0.weight"]]
    assert row["norm"] == pytest.approx(st["leaf:0.weight"]["norm"], rel=1e-6)
    assert row["hist"] == st["leaf:0.weight"]["hist"]
    bias = msg["rows"][index["leaf:0.bias"]]
    assert bias["values"] == pytest.approx(st["leaf:0.bias"]["values"], rel=1e-6)
    assert bias["data"] == pytest.approx(st["leaf:0.bias"]["data"], rel=1e-6)  # before step


# ---- hooks -----------------------------------------------------------------------------------
def test_hooks_removed_on_unwatch_and_context_exit(setup):
    model, x, y, w = setup
    assert hook_count(model) == 0
    w.watch(every=0)
    assert hook_count(model) == 1  # one forward hook on the root, nothing per parameter
    train(model, x, y, 3)
    assert w.watcher.hook_count >= 1
    w.unwatch()
    assert hook_count(model) == 0
    with w.watch(every=0) as watcher:
        train(model, x, y, 2)
        assert hook_count(model) >= 1
    assert hook_count(model) == 0 and watcher.hook_count == 0


def test_rewatch_replaces_hooks(setup):
    model, x, y, w = setup
    for _ in range(5):  # re-running the watch cell
        w.watch(model, every=0)
    assert len(model._forward_hooks) == 1
    train(model, x, y, 3)
    assert len(model._forward_hooks) == 1
    assert all(len(p._backward_hooks or {}) <= 1 for p in model.parameters())
    w.unwatch()
    assert hook_count(model) == 0


def test_rerunning_a_cell_that_builds_a_new_widget_does_not_stack_hooks(setup):
    """`w = gw.GradWidget(model, ...); w.watch()` run again: old widgets stay alive (Out[],
    the widget registry), yet only the newest watcher keeps hooks on the model."""
    model, x, y, first = setup
    first.watch(every=0)
    widgets = [first]
    for _ in range(3):
        widgets.append(gw.GradWidget(model, example_input=x))
        widgets[-1].watch(every=0)
    assert len(model._forward_hooks) == 1
    train(model, x, y, 3)
    assert len(model._forward_hooks) == 1
    assert [w.watcher.hook_count > 0 for w in widgets] == [False, False, False, True]
    assert widgets[-1].stats() and widgets[-1].watcher.samples >= 1
    widgets[-1].unwatch()
    assert hook_count(model) == 0


def test_bad_input_is_clear_and_leaks_nothing(setup):
    model, _, _, w = setup
    w.watch(every=0)
    with pytest.raises(TypeError, match="watch"):
        w.watch(42)
    with pytest.raises(ValueError, match="requires_grad"):
        w.watch([torch.zeros(3)])
    with pytest.raises(ValueError, match="every"):
        w.watch(model, every=-1)
    assert len(model._forward_hooks) == 1  # the earlier watch is untouched
    w.unwatch()
    assert hook_count(model) == 0


def test_watch_leaf_tensors():
    torch.manual_seed(0)
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    w = gw.GradWidget((a * b).sum())
    w.watch([a, b], every=0)
    for _ in range(2):
        a.grad = b.grad = None
        (a * b).sum().backward()
    st = w.stats()
    assert st["leaf:a"]["values"] == pytest.approx(b.tolist())
    assert st["leaf:b"]["values"] == pytest.approx(a.tolist())
    w.unwatch()
    assert not a._post_accumulate_grad_hooks and not a._backward_hooks


def test_throttle_by_wall_clock(setup):
    model, x, y, w = setup
    watcher = w.watch(every=3600)
    train(model, x, y, 20)
    assert watcher.samples == 1  # the first step only
    watcher.sample_next()
    train(model, x, y, 5)
    assert watcher.samples == 2
    watcher.begin_run()
    train(model, x, y, 5)
    assert watcher.samples == 3
    train(model, x, y, 1)
    watcher.end_run()  # the last step was not sampled: leaves are flushed
    assert watcher.samples == 4
    # Forwards seen through the gate: only around samples (each sampled step and the
    # three after it, whose CPU time prices the sample), not all 31.
    assert 4 <= watcher.steps < 31


def _clock_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "gradwidget-clock"]


def _wait_until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()


def test_gate_is_on_the_module_only_while_a_sample_is_due(setup):
    """Between samples nothing of ours runs per step: the forward hook comes and goes."""
    model, x, y, w = setup
    watcher = w.watch(every=0.3)
    assert len(model._forward_hooks) == 1  # the first step is due at once
    train(model, x, y, 4)  # the sampled step and the three after it that price it
    assert watcher.samples == 1 and len(model._forward_hooks) == 0
    assert _clock_threads(), "the clock waits for the next sample"
    assert _wait_until(lambda: len(model._forward_hooks) == 1, 3.0)  # due again
    train(model, x, y, 4)
    assert watcher.samples == 2 and len(model._forward_hooks) == 0
    w.unwatch()
    assert hook_count(model) == 0
    assert _wait_until(lambda: not _clock_threads()), "the clock thread exits after unwatch"
    time.sleep(0.4)
    assert len(model._forward_hooks) == 0  # and never puts a gate back


def test_closing_the_widget_removes_hooks_and_the_clock_thread():
    model = mlp()
    x = torch.randn(16, 4)
    w = gw.GradWidget(model, example_input=x)
    w.watch(every=0.2)
    train(model, x, torch.randn(16, 1), 4)
    assert _clock_threads()
    w.close()
    assert hook_count(model) == 0
    assert _wait_until(lambda: not _clock_threads(), 3.0)


def test_leaving_the_watch_block_shows_the_last_step(setup):
    model, x, y, w = setup
    with w.watch(every=3600) as watcher:
        train(model, x, y, 5)
        assert watcher.samples == 1  # the first step only, the clock says wait
    assert watcher.samples == 2 and hook_count(model) == 0
    for name, p in model.named_parameters():
        assert w.stats()[f"leaf:{name}"]["norm"] == pytest.approx(p.grad.norm().item(), rel=1e-5)


def test_throttle_sends_at_most_every(setup):
    model, x, y, w = setup
    sent = []
    w.observe(lambda c: sent.append(time.perf_counter()), "grad_stats")
    w.watch(every=0.05)
    t0 = time.perf_counter()
    train(model, x, y, 300)
    elapsed = time.perf_counter() - t0
    assert 1 <= len(sent) <= elapsed / 0.05 + 2


def test_graph_mismatch_still_maps_leaves():
    model = mlp()
    x = torch.randn(16, 4)
    loss = model(x).pow(2).mean()  # the widget draws the loss; the watch sees model(x)
    w = gw.GradWidget(gw.capture(loss, module=model))
    w.watch(model, every=0)
    model(x).pow(2).mean().backward()
    st = w.stats()
    assert {f"leaf:{n}" for n, _ in model.named_parameters()} <= set(st)
    assert w.watcher.synced  # module output's graph is an in-order part of the loss's
    ops = [n.id for n in w.graph.nodes if n.kind == "op" and n.op != "PowBackward0"]
    assert set(ops) - set(st) <= {n.id for n in w.graph.nodes if n.op == "MeanBackward0"}
    w.unwatch()


def test_align_subsequence():
    assert align(["A", "B"], ["A", "B"]) == [0, 1]
    assert align(["A", "C"], ["A", "B", "C", "D"]) == [0, 2]
    assert align(["A", "X", "C"], ["A", "B", "C"]) == [0, None, 2]


# ---- lint --------------------------------------------------------------------------------------
def codes(w) -> set[str]:
    return {lint["code"] for lint in w.grad_lint}


def test_nan_grads_flagged_without_exception(setup):
    model, x, y, w = setup
    w.watch(every=0)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    train(model, x, y, 1)
    assert "nonfinite" in codes(w)
    lint = next(item for item in w.grad_lint if item["code"] == "nonfinite")
    assert lint["node"] in w.graph and "detect_anomaly" in lint["advice"]
    assert any(s["nonfinite"] for s in w.stats().values())


@pytest.mark.parametrize("set_to_none", [True, False])
def test_accumulation_lint_quiet_on_correct_loop(setup, set_to_none):
    model, x, y, w = setup
    w.watch(every=0)
    train(model, x, y, 6, set_to_none=set_to_none)
    assert "accumulating" not in codes(w)


def test_accumulation_lint_quiet_on_zero_grad_after_step(setup):
    model, x, y, w = setup
    w.watch(every=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(5):
        out = model(x)
        loss = nn.functional.mse_loss(out, y)
        opt.zero_grad()  # between forward and backward: still correct
        loss.backward()
        opt.step()
    assert "accumulating" not in codes(w)


def test_accumulation_lint_quiet_on_deliberate_micro_batches(setup):
    model, x, y, w = setup
    w.watch(every=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(4):
        opt.zero_grad()
        for xb, yb in zip(x.chunk(4), y.chunk(4), strict=True):
            nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
    assert "accumulating" not in codes(w)


def test_accumulation_lint_fires_without_zero_grad(setup):
    model, x, y, w = setup
    w.watch(every=0)
    train(model, x, y, 4, zero=False)
    assert "accumulating" in codes(w)
    lint = next(item for item in w.grad_lint if item["code"] == "accumulating")
    assert lint["node"].startswith("leaf:") and "zero_grad" in lint["advice"]


def test_accumulation_lint_fires_with_default_throttle(setup):
    model, x, y, w = setup
    w.watch()  # default 200 ms: first step sampled, second probed, next sample reports
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    # Loop until two samples happened (how long that takes depends on the machine's load:
    # the overhead cap spaces samples out), with a generous deadline.
    t0 = time.perf_counter()
    while w.watcher.samples < 2 and time.perf_counter() - t0 < 30:
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    assert w.watcher.samples >= 2
    assert "accumulating" in codes(w)


def test_param_without_grad_flagged(setup):
    model, x, y, w = setup
    model.extra = nn.Parameter(torch.ones(3))  # requires grad, never used
    w.watch(model, every=0)
    train(model, x, y, 1)
    lint = next(item for item in w.grad_lint if item["code"] == "no-grad")
    assert lint["name"] == "extra"


def test_vanishing_and_exploding(setup):
    model, x, y, w = setup
    w.watch(every=0, lint=gw.LintConfig(vanishing=10.0, patience=2))
    train(model, x, y, 2)
    assert "vanishing" in codes(w)
    w.watch(every=0, lint=gw.LintConfig(exploding=1e-9, patience=1))
    train(model, x, y, 1)
    assert "exploding" in codes(w)
    assert all(math.isfinite(s["norm"]) for s in w.stats().values())


def test_watcher_without_widget_for_runners(setup):
    model, x, y, w = setup
    seen = []
    watcher = Watcher(w.graph, model, every=3600, on_sample=lambda wt, ids: seen.append(ids))
    watcher.begin_run()
    train(model, x, y, 3)
    watcher.end_run()
    watcher.remove()
    assert len(seen) == 2 and hook_count(model) == 0


class _no_warnings:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
