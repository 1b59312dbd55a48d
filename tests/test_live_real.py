"""Live gradients on real training setups: the gradient shown is the one the optimizer uses.

GradScaler, gradient accumulation, clipping, torch.compile, activation checkpointing, a
plain loop logging its loss, the tier counters and the update-to-weight ratio, each checked
against torch itself.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_  # bound before any watch: still seen
from torch.optim.optimizer import _global_optimizer_pre_hooks, register_optimizer_step_pre_hook

import gradwidget as gw
from gradwidget import _optstep
from gradwidget._watch import COMPILED_NOTE

ORIGINAL_CLIP = torch.nn.utils.clip_grad._clip_grads_with_norm_


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


@pytest.fixture
def data():
    torch.manual_seed(1)
    return torch.randn(32, 4), torch.randn(32, 1)


def step(model, opt, x, y) -> None:
    """One plain training step."""
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def test_gradscaler_shows_the_unscaled_gradient_and_marks_skipped_steps(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    seen = {}

    def spy(optimizer, args, kwargs):  # what the optimizer steps with
        seen.update({n: p.grad.norm().item() for n, p in model.named_parameters()})

    handle = register_optimizer_step_pre_hook(spy)
    try:
        with w.watch(every=0):
            for step in range(4):
                opt.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = nn.functional.mse_loss(model(x).float(), y)
                scaler.scale(loss).backward()
                if step == 2:  # an overflow: GradScaler skips this step
                    model[0].weight.grad[0, 0] = float("inf")
                scaler.step(opt)
                scaler.update()
                if step == 1:
                    shown = w.stats()
                    scale = scaler.get_scale()
                    for name in seen:
                        # The unscaled gradient, not the scaled one (65,536x larger).
                        assert shown[f"leaf:{name}"]["norm"] == pytest.approx(seen[name], rel=1e-5)
                    assert w.grad_watch["scale"] == scale
                    ops = [s for s in shown.values() if s["kind"] == "op"]
                    assert ops and all(s.get("unscaled_by") == scale for s in ops)
    finally:
        handle.remove()
    assert w.grad_watch["skipped_steps"] == 1
    codes = {lint["code"] for lint in w.lints}
    assert "skipped-steps" in codes and "nonfinite" not in codes
    assert all(not s["nonfinite"] for s in w.stats().values())
    assert (
        _optstep.listening() == 0
        and torch.nn.utils.clip_grad._clip_grads_with_norm_ is ORIGINAL_CLIP
    )


def test_accumulation_shows_the_accumulated_gradient_at_the_step(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with w.watch(every=0):
        for _ in range(2):
            opt.zero_grad()
            for chunk in range(4):  # four micro-batches, one optimizer step
                xs, ys = x[chunk * 8 : chunk * 8 + 8], y[chunk * 8 : chunk * 8 + 8]
                (nn.functional.mse_loss(model(xs), ys) / 4).backward()
            expected = {n: p.grad.norm().item() for n, p in model.named_parameters()}
            opt.step()
            shown = w.stats()
            for name, norm in expected.items():
                assert shown[f"leaf:{name}"]["norm"] == pytest.approx(norm, rel=1e-5)
    assert "accumulating" not in {lint["code"] for lint in w.lints}  # on purpose: no lint


def test_clipping_shows_the_clipped_gradient_and_the_norm_it_came_from(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with w.watch(every=0):
        opt.zero_grad()
        (100 * nn.functional.mse_loss(model(x), y)).backward()
        total = clip_grad_norm_(model.parameters(), 0.5)
        after = {n: p.grad.norm().item() for n, p in model.named_parameters()}
        opt.step()
    shown = w.stats()
    assert float(total) > 0.5
    for name, norm in after.items():
        s = shown[f"leaf:{name}"]
        assert s["norm"] == pytest.approx(norm, rel=1e-5)  # what the optimizer stepped with
        assert s["clipped"] is True and s["clip_total_norm"] == pytest.approx(float(total))
        assert s["clip_max_norm"] == 0.5
    assert "clipped" in {lint["code"] for lint in w.lints}
    assert torch.nn.utils.clip_grad._clip_grads_with_norm_ is ORIGINAL_CLIP  # unwrapped again


def test_update_to_weight_ratio_is_measured_over_the_step(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with w.watch(every=0):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
    st = w.stats()
    for name, p in model.named_parameters():
        ratio = (p.detach() - before[name]).norm() / p.detach().norm()
        assert st[f"leaf:{name}"]["update_ratio"] == pytest.approx(ratio.item(), rel=1e-4)


def test_update_ratio_lint_when_far_off(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=50.0)  # steps that rewrite the layers
    with w.watch(every=0):
        step(model, opt, x, y)
    assert "update-large" in {lint["code"] for lint in w.lints}


def test_compiled_module_is_drawn_eager_and_its_leaves_are_watched(data):
    x, y = data
    model = mlp()
    compiled = torch.compile(model, backend="eager")  # dynamo without a C++ toolchain
    w = gw.GradWidget(compiled, example_input=x)
    assert any(n.op == "TanhBackward0" for n in w.graph.nodes)  # the eager graph
    opt = torch.optim.SGD(compiled.parameters(), lr=0.05)
    watcher = w.watch(every=0)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(compiled(x), y).backward()
        expected = {n: p.grad.norm().item() for n, p in model.named_parameters()}
        opt.step()
    st = w.stats()
    assert st, "a compiled module is never an empty view"
    for name, norm in expected.items():
        assert st[f"leaf:{name}"]["norm"] == pytest.approx(norm, rel=1e-5)
    assert COMPILED_NOTE in w.grad_watch["notes"]
    assert watcher.op_samples == 0 and len(model._forward_hooks) == 0
    w.unwatch()


def test_non_reentrant_checkpoint_is_watched_once(data):
    x, y = data
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
    head = nn.Linear(16, 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.head = inner, head

        def forward(self, x):
            h = torch.utils.checkpoint.checkpoint(self.inner, x, use_reentrant=False)
            return self.head(h)

    model = Net()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    watcher = w.watch(every=0)
    for _ in range(2):
        step(model, opt, x, y)
    st = w.stats()
    for name, _p in model.named_parameters():
        assert st[f"leaf:{name}"]["norm"] > 0
    tanhs = [n.id for n in w.graph.nodes if n.op == "TanhBackward0"]
    assert len(tanhs) == 2 and all(t in st for t in tanhs)  # recomputed ops counted once
    assert watcher.synced and watcher.samples == 2
    w.unwatch()


def test_log_in_a_plain_loop_while_watching(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(RuntimeError, match="training loop"):
        w.log(loss=1.0)  # not watching: nowhere to put it
    losses = []
    with w.watch():
        for _ in range(20):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            w.log(loss=loss, acc=0.5)
            losses.append(loss.item())
        assert w.runs[-1]["status"] == "running"
    run = w.runs[-1]
    assert run["schedule"] == "manual" and run["status"] == "done"
    assert run["losses"] == pytest.approx(losses) and run["metrics"]["acc"] == [0.5] * 20
    assert run["optimizer"] == "SGD" and run["lr"] == 0.05
    assert w.run_info[-1]["id"] == run["id"]


def test_log_in_a_plain_loop_marks_divergence(data):
    x, _y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    with w.watch():
        for v in (1.0, 2.0, float("nan"), 3.0):
            w.log(loss=v)  # never raises into the user's loop
    run = w.runs[-1]
    assert run["status"] == "diverged" and "Diverged" in run["error"]
    assert len(run["losses"]) == 4


def test_tier_counters_and_rates(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watcher = w.watch(every=0)
    for _ in range(5):
        step(model, opt, x, y)
    gw_state = w.grad_watch
    assert watcher.leaf_samples == 5 and watcher.op_samples == 5 and watcher.samples == 5
    assert gw_state["leaf_samples"] == 5 and gw_state["op_samples"] == 5
    assert gw_state["leaf_hz"] > 0 and gw_state["op_hz"] > 0
    assert 0 < gw_state["overhead"] < 1
    w.unwatch()
    assert _optstep.listening() == 0


def test_default_rates_keep_the_leaf_tier_at_its_clock(data):
    """With defaults, parameters are sampled at ~5 Hz whatever the intermediates cost."""
    import time

    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watcher = w.watch()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.5:
        step(model, opt, x, y)
    elapsed = time.perf_counter() - t0
    # At most one per 200 ms (plus the first), and not starved by the intermediate tier.
    assert 3 <= watcher.leaf_samples <= elapsed / 0.2 + 2
    assert watcher.op_samples <= watcher.leaf_samples
    w.unwatch()


def test_no_hooks_leak_after_an_error_in_the_loop(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(ZeroDivisionError), w.watch(every=0):
        step(model, opt, x, y)
        1 / 0  # noqa: B018
    assert _optstep.listening() == 0 and len(model._forward_hooks) == 0
    assert not _global_optimizer_pre_hooks
    assert math.isfinite(w.stats()["leaf:0.weight"]["norm"])


def test_gradscaler_with_a_fused_optimizer_is_unscaled_too(data):
    """Fused optimizers unscale inside their kernel: .grad is still scaled at the step."""
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cpu")
    with w.watch(every=0):
        for _ in range(2):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            true = {
                n: p.grad.norm().item() / scaler.get_scale() for n, p in model.named_parameters()
            }
            scaler.step(opt)
            scaler.update()
            for name, norm in true.items():
                assert w.stats()[f"leaf:{name}"]["norm"] == pytest.approx(norm, rel=1e-5)


def test_gpt2_under_gradscaler_and_bf16_shows_the_unscaled_gradient():
    """The issue's setup on a real Hugging Face model (built from a config, no download)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=200, n_positions=32)
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.randint(0, 200, (2, 16))
    with gw.record(model) as rec:
        graph = rec.graph_of(model(input_ids=ids, labels=ids).loss)
    w = gw.GradWidget(graph)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cpu")
    used = {}

    def spy(optimizer, args, kwargs):
        used.update({n: p.grad.norm().item() for n, p in model.named_parameters()})

    handle = register_optimizer_step_pre_hook(spy)
    try:
        with w.watch(model, every=0):
            for _ in range(2):
                opt.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids).loss
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                st = w.stats()
                for name, norm in used.items():
                    assert st[f"leaf:{name}"]["norm"] == pytest.approx(norm, rel=1e-5), name
    finally:
        handle.remove()
    assert w.grad_watch["scale"] == scaler.get_scale()
    ops = [s for s in w.stats().values() if s["kind"] == "op"]
    assert len(ops) > 50 and all(s.get("unscaled_by") for s in ops)


def test_the_selected_node_gets_full_statistics_at_every_sample(data):
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watcher = w.watch(every=1e-9, max_overhead=1.0)  # every step, at the norm level
    for _ in range(3):
        step(model, opt, x, y)
    tanh = next(n.id for n in w.graph.nodes if n.op == "TanhBackward0")
    assert math.isnan(watcher.last_sample[tanh]["mean"])  # norms only
    w.selected = tanh
    assert watcher.detail == {tanh}
    step(model, opt, x, y)
    s = watcher.last_sample[tanh]
    assert s["level"] == "full" and sum(s["hist"]) == s["numel"] and math.isfinite(s["mean"])
    w.selected = ""
    assert watcher.detail == set()
    w.unwatch()


@pytest.mark.parametrize("make_opt", [torch.optim.SGD, torch.optim.LBFGS])
def test_a_step_with_a_closure_shows_the_gradient_the_closure_computed(data, make_opt):
    """step(closure) computes the gradient inside step() (Lightning does this; LBFGS needs it):
    at the step pre-hook .grad is still the last step's, or None."""
    x, y = data
    model = mlp()
    w = gw.GradWidget(model, example_input=x)
    opt = make_opt(model.parameters(), lr=0.1)
    first: dict[str, float] = {}

    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if not first:  # LBFGS calls it again in its line search: its first call counts
            first.update({n: p.grad.norm().item() for n, p in model.named_parameters()})
        return loss

    with w.watch(every=0):
        for _ in range(3):
            first.clear()
            opt.step(closure)
            shown = w.stats()
            for name, norm in first.items():
                assert shown[f"leaf:{name}"]["norm"] == pytest.approx(norm, rel=1e-5)
    assert w.watcher.leaf_samples == 3
