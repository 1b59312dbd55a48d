"""The Trainer without a widget: a fake publisher and fake run hooks record what it reports."""

from __future__ import annotations

import torch
import torch.nn as nn
from test_train import _step_fn

from gradwidget._constants import SCHEDULE_LABELS
from gradwidget._optim import SCHEDULES
from gradwidget._train import Trainer
from gradwidget._wire import run_summary


class FakePublisher:
    def __init__(self, **settings):
        self.values = {
            "lr": 0.1,
            "optimizer": "SGD",
            "optimizer_settings": {},
            "schedule": "constant",
            "total_steps": 5,
            "live": False,
            **settings,
        }
        self.calls: list[tuple[str, object]] = []

    def settings(self):
        return dict(self.values)

    def set_total_steps(self, steps):
        self.values["total_steps"] = steps

    def __getattr__(self, name):  # show_state, show_progress, show_runs, ...
        if not name.startswith("show_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))

    def last(self, name):
        return [args for n, args in self.calls if n == name][-1]


class FakeHooks:
    def __init__(self):
        self.events: list[str] = []

    def begin_run(self):
        self.events.append("begin")

    def sample_next(self):
        self.events.append("sample_next")

    def end_run(self):
        self.events.append("end")


def _model():
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def test_trainer_reports_through_the_publisher_only():
    model = _model()
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    pub, hooks = FakePublisher(), FakeHooks()
    t = Trainer(model, pub, hooks)
    t.train_fn(_step_fn(model, x, y), steps=4)

    assert pub.values["total_steps"] == 4
    (run,) = t.runs
    assert run["status"] == "done" and len(run["losses"]) == 4 and run["optimizer"] == "SGD"
    # The same losses as the same loop run by hand from the same start.
    ref = _model()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    expected = [float(_step_fn(ref, x, y)(opt).detach()) for _ in range(4)]
    assert run["losses"] == expected
    assert hooks.events == ["begin", "sample_next", "end"]
    assert pub.last("show_state") == ("idle",)
    assert pub.last("show_runs") == ([run_summary(run)],)
    progress = pub.last("show_progress")[0]
    assert progress["step"] == 4 and progress["total"] == 4 and progress["status"] == "done"
    assert any(n == "show_points" for n, _ in pub.calls)


def test_trainer_reruns_from_the_snapshot_when_a_setting_changes():
    model = _model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    pub = FakePublisher()
    t = Trainer(model, pub)
    t.train_fn(_step_fn(model, x, y), steps=3)
    first = t.runs[0]["losses"]
    pub.values["lr"] = 0.01
    t.on_settings_change("lr")
    assert t.wait(30)
    a, b = t.runs
    assert b["lr"] == 0.01 and b["status"] == "done"
    assert a["losses"] == first and b["losses"][0] == first[0]  # same start, same first loss
    t.reset()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())


def test_trainer_without_a_module_says_what_it_needs():
    t = Trainer(None, FakePublisher())
    try:
        t.train_fn(lambda opt: 0.0, steps=1)
    except ValueError as exc:
        assert "example_input" in str(exc)
    else:
        raise AssertionError("a Trainer without a module must refuse to run")


def test_schedule_menu_and_factory_agree():
    assert list(SCHEDULE_LABELS) == list(SCHEDULES)
