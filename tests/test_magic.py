"""The %%train cell magic in a real IPython InteractiveShell."""

from __future__ import annotations

import threading

import pytest
from IPython.core.interactiveshell import InteractiveShell

SETUP = """
import torch, torch.nn as nn, gradwidget as gw
%load_ext gradwidget
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
x, y = torch.randn(64, 2), torch.randn(64, 1)
w = gw.GradWidget(model, example_input=x, lr=1e-2, optimizer="adam")
"""

LOOP = """%%train w --steps 20
for step in w.steps():
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    w.log(loss=loss)
print("final", loss.item())
"""


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    result = sh.run_cell(SETUP)
    assert result.success, result.error_in_exec
    yield sh
    w = sh.user_ns["w"]
    w.stop()
    assert w.wait(30)
    sh.user_ns.clear()


def run(sh, code):
    return sh.run_cell(code)


def test_cell_runs_synchronously_with_opt_and_lr(shell, capsys):
    result = run(shell, LOOP)
    assert result.success, result.error_in_exec
    ns = shell.user_ns
    w = ns["w"]
    (r,) = w.runs
    assert r["status"] == "done" and len(r["losses"]) == 20 and r["lr"] == 1e-2
    assert type(ns["opt"]).__name__ == "Adam" and ns["lr"] == 1e-2
    assert "sched" not in ns
    assert "final" in capsys.readouterr().out  # the first run prints into the cell
    assert w.total_steps == 20


def test_change_reruns_the_cell_in_the_background(shell, capsys):
    assert run(shell, LOOP).success
    capsys.readouterr()
    w = shell.user_ns["w"]
    caller = threading.get_ident()
    assert run(shell, "w.optimizer = 'SGD'; w.lr = 0.1").success
    assert w.wait(30)
    runs = w.runs
    assert [r["optimizer"] for r in runs][-1] == "SGD" and runs[-1]["lr"] == 0.1
    assert runs[-1]["status"] == "done"
    # The rerun's print went to the widget's output area, not to the cell.
    assert "final" not in capsys.readouterr().out
    assert "final" in "".join(o.get("text", "") for o in w.train_output)
    assert threading.get_ident() == caller


def test_schedule_puts_sched_in_namespace_and_determinism(shell):
    assert run(shell, LOOP).success
    w = shell.user_ns["w"]
    assert run(shell, "w.schedule = 'cosine'").success
    assert w.wait(30)
    assert "sched" in shell.user_ns and w.runs[-1]["schedule"] == "cosine"
    assert run(shell, "w.schedule = 'constant'").success
    assert w.wait(30)
    assert w.runs[0]["losses"] == w.runs[-1]["losses"]


def test_error_in_cell_marks_run_and_next_cell_works(shell):
    bad = "%%train w --steps 5\nfor step in w.steps():\n    undefined_name\n"
    result = run(shell, bad)
    assert isinstance(result.error_in_exec, NameError)
    w = shell.user_ns["w"]
    assert w.runs[-1]["status"] == "error" and "undefined_name" in w.runs[-1]["error"]
    assert "<%%train cell" in w.runs[-1]["traceback"]
    assert run(shell, LOOP).success
    assert w.runs[-1]["status"] == "done"


def test_keyboard_interrupt_stops(shell):
    code = (
        "%%train w --steps 50\n"
        "for step in w.steps():\n"
        "    if step == 5:\n"
        "        raise KeyboardInterrupt\n"
    )
    run(shell, code)
    w = shell.user_ns["w"]
    assert w.runs[-1]["status"] == "stopped" and w.train_state == "idle"
    assert run(shell, LOOP).success


def test_seed_option(shell):
    noisy = LOOP.replace("--steps 20", "--steps 5 --seed 7").replace(
        "model(x)", "model(x + torch.randn_like(x))"
    )
    assert run(shell, noisy).success
    assert run(shell, noisy).success
    a, b = shell.user_ns["w"].runs
    assert a["losses"] == b["losses"] and a["seed"] == 7


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("%%train nope", NameError),
        ("%%train x", TypeError),
        ("%%train w --steps 0", ValueError),
        ("%%train w --bogus 3", ValueError),
        ("%%train", ValueError),
    ],
)
def test_bad_arguments_give_clear_errors(shell, line, error):
    result = run(shell, line + "\npass\n")
    assert isinstance(result.error_in_exec, error)
    assert "%%train" in str(result.error_in_exec)
