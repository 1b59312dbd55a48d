"""Training runs: sync first run, reruns in a worker, cancel/debounce, history, divergence,
lr_find, schedules, output routing, and the reliability of runs (stop, rerun, errors, no leaks)."""

from __future__ import annotations

import gc
import sys
import threading
import time

import psutil
import pytest
import torch
import traitlets
from torch import nn

from gradwidget import GradWidget, _train
from gradwidget._optim import SCHEDULES, schedule_curve, suggest_lr
from gradwidget._output import _Router, routed_threads


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(64, 2), torch.randn(64, 1)
    return model, x, y


def _step_fn(model, x, y, hook=None):
    def step(opt):
        if hook is not None:
            hook(opt)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _hook_count(module: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in module.modules()
    ) + sum(len(p._backward_hooks or {}) for p in module.parameters())


@pytest.fixture
def setup():
    model, x, y = _problem()
    w = GradWidget(model, example_input=x, lr=1e-2, optimizer="adam")
    yield w, model, x, y
    w.stop()
    assert w.wait(30)


def test_constructor_values_and_names(setup):
    w, *_ = setup
    assert w.lr == 1e-2 and w.optimizer == "Adam"
    for name, canonical in [("sgd", "SGD"), ("ADAMW", "AdamW"), ("rmsprop", "RMSprop")]:
        w.optimizer = name
        assert w.optimizer == canonical
    with pytest.raises(traitlets.TraitError, match="choose one of"):
        w.optimizer = "lion"
    with pytest.raises(traitlets.TraitError, match="positive"):
        w.lr = -1.0
    with pytest.raises(traitlets.TraitError, match="choose one of"):
        w.schedule = "wobbly"
    w.schedule = "Cosine annealing"
    assert w.schedule == "cosine"
    assert w.runs == []  # nothing bound: changes do not start anything
    assert w.wait(0)


def test_first_run_is_synchronous_and_recorded(setup):
    w, model, x, y = setup
    caller = threading.get_ident()
    seen = set()
    w.train(_step_fn(model, x, y, hook=lambda opt: seen.add(threading.get_ident())), steps=20)
    assert seen == {caller}
    (run,) = w.runs
    assert run["status"] == "done" and run["error"] is None
    assert run["lr"] == 1e-2 and run["optimizer"] == "Adam" and run["schedule"] == "constant"
    assert len(run["losses"]) == 20 and len(run["lrs"]) == 20
    assert run["losses"][-1] < run["losses"][0]
    assert w.train_state == "idle" and w.run_info[0]["status"] == "done"


def test_determinism_and_restore(setup):
    w, model, x, y = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    w.train(_step_fn(model, x, y), steps=15)
    w.lr = 0.05
    assert w.wait(30)
    w.lr = 1e-2
    assert w.wait(30)
    first, other, again = w.runs
    assert first["losses"] == again["losses"]
    assert other["losses"] != first["losses"] and other["lr"] == 0.05
    w.reset()
    assert w._trainer.snapshot.equals(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_seed_reseeds_every_run(setup):
    w, model, x, _ = setup

    def step(opt):  # the data depend on the RNG
        opt.zero_grad()
        loss = model(x + torch.randn_like(x)).pow(2).mean()
        loss.backward()
        opt.step()
        return loss

    w.train(step, steps=5, seed=3)
    w.train(step, steps=5, seed=3)
    w.train(step, steps=5, seed=4)
    a, b, c = w.runs
    assert a["losses"] == b["losses"] and a["seed"] == 3
    assert c["losses"] != a["losses"] and c["seed"] == 4  # the seed is really used


def test_optimizers_and_settings(setup):
    w, model, x, y = setup
    w.train(_step_fn(model, x, y), steps=3)
    for name in ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]:
        w.optimizer = name
        assert w.wait(30)
        assert w.runs[-1]["optimizer"] == name and w.runs[-1]["status"] == "done"
    w.optimizer = "sgd"
    w.optimizer_settings = {"momentum": 0.9, "nesterov": True}
    assert w.wait(30)
    assert w.runs[-1]["settings"] == {"momentum": 0.9, "nesterov": True, "weight_decay": 0.0}
    with pytest.raises(traitlets.TraitError, match="Nesterov"):
        w.optimizer_settings = {"nesterov": True}
    assert w.optimizer_defaults["AdamW"]["weight_decay"] == 0.01


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_schedules_advance_and_are_recorded(setup, schedule):
    w, model, x, y = setup
    w.schedule = schedule
    w.train(_step_fn(model, x, y), steps=12)
    run = w.runs[-1]
    assert run["status"] == "done" and run["schedule"] == schedule
    expected = schedule_curve(schedule, w.lr, 12, "Adam")
    if schedule == "constant":
        assert run["lrs"] == [w.lr] * 12
    else:
        assert run["lrs"] == pytest.approx(expected)
        assert run["lrs"][-1] != run["lrs"][0]
    assert len(w.schedule_preview) == 4 * len(expected)


def test_exception_marks_error_and_widget_stays_usable(setup):
    w, model, x, y = setup
    hooks = _hook_count(model)

    def bad(opt):
        raise RuntimeError("broken training code")

    with pytest.raises(RuntimeError, match="broken training code"):
        w.train(bad, steps=5)
    run = w.runs[-1]
    assert run["status"] == "error" and "broken training code" in run["error"]
    assert "bad" in run["traceback"] and "gradwidget/_train.py" not in run["traceback"]
    assert w.train_output[-1]["output_type"] == "error"
    assert _hook_count(model) == hooks and w.train_state == "idle"

    # Rerun errors (in the worker) land in the widget's output, not in a cell.
    fail = {"on": False}

    def sometimes(opt):
        if fail["on"]:
            raise ValueError("fails on rerun")
        return _step_fn(model, x, y)(opt)

    w.train(sometimes, steps=5)
    fail["on"] = True
    w.lr = 0.02
    assert w.wait(30)
    assert w.runs[-1]["status"] == "error" and "fails on rerun" in w.runs[-1]["error"]
    assert w.train_output[-1]["ename"] == "ValueError"
    fail["on"] = False
    w.lr = 0.03
    assert w.wait(30)
    assert w.runs[-1]["status"] == "done" and _hook_count(model) == hooks


def test_keyboard_interrupt_stops_cleanly(setup):
    w, model, x, y = setup
    inner = _step_fn(model, x, y)
    count = {"n": 0}

    def step(opt):
        count["n"] += 1
        if count["n"] == 4:
            raise KeyboardInterrupt
        return inner(opt)

    with pytest.raises(KeyboardInterrupt):
        w.train(step, steps=10)
    run = w.runs[-1]
    assert run["status"] == "stopped" and len(run["losses"]) == 3
    assert w.train_state == "idle" and w.wait(0)
    w.train(inner, steps=5)
    assert w.runs[-1]["status"] == "done"


def test_divergence_is_marked(setup, capsys):
    w, model, x, y = setup
    w.optimizer = "SGD"
    w.lr = 10.0
    w.train(_step_fn(model, x, y), steps=200)
    run = w.runs[-1]
    assert run["status"] == "diverged"
    assert "likely too large" in run["error"] and len(run["losses"]) < 200
    assert "likely too large" in capsys.readouterr().err  # said in the cell, too


def test_100_changes_one_run_in_flight_last_value_wins(setup, monkeypatch):
    w, model, x, y = setup
    threads_before = set(threading.enumerate())
    hooks = _hook_count(model)
    lock = threading.Lock()
    inflight = {"now": 0, "max": 0}
    inner = _step_fn(model, x, y)

    def step(opt):
        with lock:
            inflight["now"] += 1
            inflight["max"] = max(inflight["max"], inflight["now"])
        try:
            time.sleep(0.002)  # a step that takes a little time, so changes land mid-run
            return inner(opt)
        finally:
            with lock:
                inflight["now"] -= 1

    w.train(step, steps=50)
    values = [10 ** (-4 + 3 * i / 99) for i in range(100)]
    for v in values:
        w.lr = v
        time.sleep(0.015)  # 100 changes in ~1.5 s
    assert w.wait(60)
    assert inflight["max"] == 1
    last = w.runs[-1]
    assert last["lr"] == values[-1] and last["status"] == "done"
    assert all(r["status"] in ("done", "stopped") for r in w.runs)
    assert sum(r["status"] == "running" for r in w.runs) == 0
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - threads_before == set()
    assert _hook_count(model) == hooks
    assert routed_threads() == 0 and not isinstance(sys.stdout, _Router)


def test_change_cancels_run_quickly(setup):
    w, model, x, y = setup
    inner = _step_fn(model, x, y)
    w.train(lambda opt: (time.sleep(0.01), inner(opt))[1], steps=5)
    w.total_steps = 100_000  # a long rerun
    deadline = time.monotonic() + 10
    while w.train_state != "running" and time.monotonic() < deadline:
        time.sleep(0.005)
    long_id = w.runs[-1]["id"]

    def status(run_id):
        return next(r["status"] for r in w.runs if r["id"] == run_id)

    t0 = time.monotonic()
    w.lr = 0.5
    while status(long_id) == "running":
        time.sleep(0.002)
    cancel = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while w.runs[-1]["id"] == long_id and time.monotonic() < deadline:
        time.sleep(0.005)
    w.stop()
    assert w.wait(30)
    long_run = next(r for r in w.runs if r["id"] == long_id)
    assert long_run["status"] == "stopped" and long_run["note"] == "replaced by a newer run"
    assert w.runs[-1]["id"] > long_id and w.runs[-1]["lr"] == 0.5
    print(f"cancel latency {cancel * 1000:.0f} ms")


def test_wait_counts_scheduled_rerun_as_busy(setup):
    w, model, x, y = setup
    w.train(_step_fn(model, x, y), steps=5)
    w.lr = 0.02
    assert w.wait(0) is False  # scheduled (debounce) but maybe not started: still busy
    assert w.wait(30) is True
    assert len(w.runs) == 2


def test_stop_pause_resume_single_step(setup):
    w, model, x, y = setup
    inner = _step_fn(model, x, y)
    w.train(lambda opt: (time.sleep(0.005), inner(opt))[1], steps=5)
    w.total_steps = 10_000
    w.pause()
    # (a rerun started after pause() is not paused: request() clears it)
    deadline = time.monotonic() + 10
    while w.train_state != "running" and time.monotonic() < deadline:
        time.sleep(0.005)
    w.pause()
    time.sleep(0.3)
    n = len(w.runs[-1]["losses"])
    time.sleep(0.3)
    assert len(w.runs[-1]["losses"]) == n and w.train_state == "paused"
    w._trainer.single_step()
    deadline = time.monotonic() + 5
    while len(w.runs[-1]["losses"]) == n and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(w.runs[-1]["losses"]) == n + 1
    w.resume()
    time.sleep(0.2)
    assert len(w.runs[-1]["losses"]) > n + 1
    w.stop()
    assert w.wait(30)
    assert w.runs[-1]["status"] == "stopped"


def test_single_step_when_idle_starts_a_paused_run(setup):
    w, model, x, y = setup
    w.train(_step_fn(model, x, y), steps=50)
    w._trainer.single_step()
    deadline = time.monotonic() + 10
    while len(w.runs) < 2 or not w.runs[-1]["losses"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)  # and no further step
    assert w.train_state == "paused" and len(w.runs[-1]["losses"]) == 1
    w.stop()
    assert w.wait(30)


def test_lr_find_suggests_and_restores(setup):
    w, model, x, y = setup
    w.train(_step_fn(model, x, y), steps=5)
    n_runs = len(w.runs)
    result = w.lr_find(steps=60, start=1e-5, end=10)
    assert w._trainer.snapshot.equals(model)
    assert len(result["losses"]) >= 5 and len(result["lrs"]) == len(result["losses"])
    assert result["lrs"] == sorted(result["lrs"]) and result["lrs"][0] == pytest.approx(1e-5)
    assert 1e-5 <= result["suggestion"] <= 10
    assert len(w.runs) == n_runs  # not part of the run history
    assert w.lr_find_plot["suggestion"] == result["suggestion"]
    with pytest.raises(ValueError):
        w.lr_find(start=1, end=0.1)


def test_suggest_lr_on_a_clean_curve():
    lrs = [10 ** (-5 + 6 * i / 99) for i in range(100)]
    # loss falls fastest (in log lr) around 1e-2 and blows up after 1
    losses = [1 / (1 + (lr / 1e-2) ** 2) + (lr > 1) * 10 * lr for lr in lrs]
    s = suggest_lr(lrs, losses)
    assert 1e-3 < s < 1e-1
    assert suggest_lr(lrs[:3], losses[:3]) is None


def test_live_mode_changes_lr_in_place(setup):
    w, model, x, y = setup
    inner = _step_fn(model, x, y)
    w.train(lambda opt: (time.sleep(0.005), inner(opt))[1], steps=5)
    w.total_steps = 400
    deadline = time.monotonic() + 10
    while w.train_state != "running" and time.monotonic() < deadline:
        time.sleep(0.005)
    n_runs = len(w.runs)
    w.live = True
    w.lr = 0.123
    time.sleep(0.2)
    assert len(w.runs) == n_runs
    assert w.runs[-1]["lrs"][-1] == 0.123
    w.stop()
    assert w.wait(30)


def test_rerun_output_goes_to_the_widget(setup, capsys):
    w, model, x, y = setup
    inner = _step_fn(model, x, y)

    def step(opt):
        print("hello from the step")
        return inner(opt)

    w.train(step, steps=2)
    assert "hello from the step" in capsys.readouterr().out  # sync: in the cell
    w.lr = 0.02
    assert w.wait(30)
    assert "hello from the step" not in capsys.readouterr().out
    text = "".join(o.get("text", "") for o in w.train_output)
    assert text.count("hello from the step") == 2
    assert routed_threads() == 0 and not isinstance(sys.stdout, _Router)


def test_loss_points_are_sent_incrementally(setup):
    w, model, x, y = setup
    sent = []
    original = w.send

    def spy(content, buffers=None):
        if content.get("type") == "run_points":
            sent.append((content, [bytes(b) for b in buffers]))
        return original(content, buffers)

    w.send = spy
    inner = _step_fn(model, x, y)
    w.train(lambda opt: (time.sleep(0.002), inner(opt))[1], steps=200)
    assert len(sent) >= 2  # throttled, yet several flushes
    assert len(sent) < 200
    expected = 0
    for content, (loss_bytes, _) in sent:
        assert content["loss_start"] == expected  # only the new points, no resend
        expected += len(loss_bytes) // 4
    assert expected == 200


def test_clear_and_history(setup):
    w, model, x, y = setup
    w.train(_step_fn(model, x, y), steps=3)
    w.lr = 0.02
    assert w.wait(30)
    assert len(w.runs) == 2 and len(w.run_info) == 2
    w.clear_runs()
    assert w.runs == [] and w.run_info == []


def test_clear_errors_outside_a_run(setup):
    w, model, *_ = setup
    with pytest.raises(RuntimeError, match="training loop"):
        w.log(loss=1.0)
    with pytest.raises(RuntimeError, match="training loop"):
        next(iter(w.steps()))
    with pytest.raises(TypeError, match="step_fn"):
        w.train(42)
    with pytest.raises(RuntimeError, match="train"):
        w.lr_find()
    tensor_widget = GradWidget(model(torch.randn(3, 2)).sum())
    with pytest.raises(ValueError, match="model"):
        tensor_widget.train(lambda opt: 0.0, steps=1)


def test_200_reruns_memory(setup, monkeypatch):
    monkeypatch.setattr(_train, "DEBOUNCE", 0.0)
    w, model, x, y = setup
    w.train(_step_fn(model, x, y), steps=5)
    proc = psutil.Process()

    def reruns(n):
        for i in range(n):
            w.lr = 1e-3 * (1 + i % 7) + 1e-9 * i
            assert w.wait(30)

    reruns(30)  # warm-up: allocator and caches settle
    gc.collect()
    rss0 = proc.memory_info().rss
    reruns(200)
    gc.collect()
    growth = proc.memory_info().rss / rss0 - 1
    print(f"RSS growth over 200 reruns: {growth * 100:.2f} %")
    assert growth < 0.05
    assert len(w.runs) <= _train.MAX_RUNS


def test_controls_messages_from_the_browser(setup):
    w, model, x, y = setup
    inner = _step_fn(model, x, y)
    w.train(lambda opt: (time.sleep(0.002), inner(opt))[1], steps=20)
    sent = []
    original = w.send
    w.send = lambda content, buffers=None: (sent.append(content), original(content, buffers))
    msg = w._handle_custom_msg  # the real path a front-end message takes
    msg({"type": "train", "action": "run"}, [])
    assert w.wait(30) and len(w.runs) == 2 and w.runs[0]["losses"] == w.runs[1]["losses"]
    msg({"type": "train", "action": "hello"}, [])
    assert [c["run"] for c in sent if c.get("type") == "run_points"][-2:] == [1, 2]
    msg({"type": "train", "action": "lr_find"}, [])
    assert w.wait(60) and w.lr_find_plot["suggestion"] is not None
    assert w._trainer.snapshot.equals(model)
    msg({"type": "train", "action": "no-such-action"}, [])
    msg({"type": "something-else"}, [])
    msg({"type": "train", "action": "reset"}, [])
    assert w._trainer.snapshot.equals(model)
    msg({"type": "train", "action": "clear"}, [])
    assert w.runs == []


def test_live_gradient_watcher_follows_runs(setup):
    w, model, x, y = setup
    w.watch()
    try:
        w.train(_step_fn(model, x, y), steps=10)
        steady = w._watcher.hook_count
        calls = 0

        def bad(opt):
            nonlocal calls
            calls += 1
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            if calls == 3:
                raise RuntimeError("mid-step failure")
            loss.backward()
            opt.step()
            return loss

        with pytest.raises(RuntimeError):
            w.train(bad, steps=10)
        assert w._watcher.hook_count == steady  # no hook left over from the failed step
        w.lr = 0.02
        assert w.wait(30)
        assert w.runs[-1]["status"] == "done" and w._watcher.hook_count == steady
        assert w._watcher.samples > 0
    finally:
        w.unwatch()
    assert _hook_count(model) == 0


def test_runs_watch_the_drawn_module_by_themselves(setup):
    """A widget drawn from a module lights up while training without calling watch();
    the hooks exist only while a run does, and every run (reruns too) is sampled."""
    w, model, x, y = setup
    w.train(_step_fn(model, x, y), steps=20)
    assert w.watcher is not None and w.watcher.hook_count == 0
    assert _hook_count(model) == 0
    stats = w.stats()
    assert {s["name"] for s in stats.values() if s["kind"] == "leaf"} == {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    }
    w.lr = 0.1
    assert w.wait(30)
    assert w.watcher.samples >= 2 and w.watcher.hook_count == 0  # first and last step


def test_auto_watch_off_and_explicit_watch_are_respected():
    model, x, y = _problem()
    w = GradWidget(model, example_input=x, auto_watch=False)
    w.train(_step_fn(model, x, y), steps=5)
    assert w.stats() == {} and _hook_count(model) == 0
    w2 = GradWidget(model, example_input=x)
    watcher = w2.watch(every=0.0)
    w2.train(_step_fn(model, x, y), steps=5)
    assert w2.watcher is watcher and watcher.hook_count > 0  # the user's watch stays on
    w2.unwatch()
    assert watcher.hook_count == 0 and _hook_count(model) == 0
