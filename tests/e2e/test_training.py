"""Training controls in a real JupyterLab 4 / Notebook 7: the slider reruns the %%train cell in
the background, a new curve appears, ``runs`` grows, and the UI stays responsive meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.browser


def train_cell(steps: int, sleep: float) -> str:
    """A %%train cell: the usual loop, sleeping ``sleep`` seconds per step."""
    return (
        f"%%train w --steps {steps}\n"
        "for step in w.steps():\n"
        "    opt.zero_grad()\n"
        "    loss = nn.functional.mse_loss(model(x), y)\n"
        "    loss.backward()\n"
        "    opt.step()\n"
        "    w.log(loss=loss)\n"
        f"    time.sleep({sleep})"
    )


CELLS = [
    "import time, torch, torch.nn as nn, gradwidget as gw\n"
    "%load_ext gradwidget\n"
    "torch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))\n"
    "x, y = torch.randn(128, 2), torch.randn(128, 1)\n"
    'w = gw.GradWidget(model, example_input=x, lr=1e-2, optimizer="adam")\n'
    "w",
    # Each step sleeps a little so a rerun lasts ~3 s: long enough to interact during it.
    train_cell(300, 0.01) + '\nprint("final loss", loss.item())',
]

LEGEND_COUNT = "() => document.querySelectorAll('.gradwidget .gw-runs-legend [data-run]').length"


def _wait_legend(nb, n: int, timeout: float = 60) -> None:
    nb.page.wait_for_function(f"() => ({LEGEND_COUNT})() >= {n}", timeout=int(timeout * 1000))


def _canvas_ink(nb) -> int:
    """Non-transparent pixels on the loss canvas (0 for an empty plot)."""
    return nb.page.evaluate(
        "() => { const c = document.querySelector('.gradwidget canvas.gw-loss-canvas');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"
    )


def test_slider_reruns_and_ui_stays_responsive(nb):
    nb.open(CELLS)
    nb.run_all()
    w = nb.widget()
    w.locator("input.gw-lr-slider").wait_for()
    _wait_legend(nb, 1)
    assert nb.py("[r['status'] for r in w.runs]") == ["done"]
    ink_one = _canvas_ink(nb)
    assert ink_one > 0

    # Move the slider (log10 scale): lr 0.1. The kernel is idle, so the observer sees it
    # at once and starts a rerun in the worker thread.
    w.locator("input.gw-lr-slider").fill("-1")
    nb.wait_py("w.lr", 0.1)
    w.locator(".gw-train-state[data-state='running']").wait_for(timeout=20_000)

    # While that run goes on, the kernel still answers and a typed value gets through.
    t0 = time.monotonic()
    assert nb.py("w.train_state") in ("running", "scheduled")
    answer = time.monotonic() - t0
    lr_field = w.locator("input.gw-lr-value")
    lr_field.fill("0.05")
    t1 = time.monotonic()
    lr_field.press("Enter")
    assert nb.wait_py("w.lr", 0.05, timeout=10) == 0.05
    seen = time.monotonic() - t1
    print(
        f"kernel answered during a run in {answer * 1000:.0f} ms; "
        f"typed lr reached Python in {seen * 1000:.0f} ms"
    )

    assert nb.py("w.wait(120)") is True
    runs = nb.py("[(r['lr'], r['status']) for r in w.runs]")
    assert runs[0] == [0.01, "done"]
    assert runs[-1] == [0.05, "done"]
    assert len(runs) == 3 and runs[1][0] == 0.1 and runs[1][1] in ("stopped", "done")
    _wait_legend(nb, 3)
    assert _canvas_ink(nb) > ink_one  # new curves drawn
    current = w.locator(".gw-run-current")
    assert "lr 0.05" in current.inner_text() and "done" in current.inner_text()
    # The rerun's print went to the widget's output area, not to a cell.
    assert "final loss" in w.locator(".gw-train-output").inner_text()

    ARTIFACTS.mkdir(exist_ok=True)
    w.locator(".gw-runs").screenshot(path=str(ARTIFACTS / f"training-runs-{nb.app}.png"))
    w.locator(".gw-train").screenshot(path=str(ARTIFACTS / f"training-controls-{nb.app}.png"))

    # Buttons: run, then stop during the run.
    w.locator("button[data-action='run']").click()
    w.locator(".gw-train-state[data-state='running']").wait_for(timeout=20_000)
    w.locator("button[data-action='stop']").click()
    assert nb.py("w.wait(60)") is True
    assert nb.py("w.runs[-1]['status']") == "stopped"
    nb.assert_no_errors()


def test_divergence_and_lr_find_in_the_browser(nb):
    fast_cell = CELLS[1].replace("300", "60").replace("    time.sleep(0.01)\n", "")
    nb.open([CELLS[0], fast_cell])
    nb.run_all()
    w = nb.widget()
    _wait_legend(nb, 1)
    nb.execute("w.optimizer = 'SGD'; w.lr = 10.0; w.wait(60)")
    _wait_legend(nb, 2)
    assert nb.py("w.runs[-1]['status']") == "diverged"
    diverged = w.locator(".gw-run-diverged")
    assert "likely too large" in diverged.first.inner_text()

    w.locator("button[data-action='lr_find']").click()
    w.locator(".gw-lrfind-text").filter(has_text="suggested lr").wait_for(timeout=60_000)
    assert nb.py("w.wait(60)") is True
    assert nb.py("w._trainer.snapshot.equals(model)") is True
    ARTIFACTS.mkdir(exist_ok=True)
    w.locator(".gw-runs").screenshot(path=str(ARTIFACTS / f"training-lrfind-{nb.app}.png"))

    # A view rendered after the runs (here: after saving and reloading the page) asks the
    # kernel for their points.
    nb.command("docmanager:save")
    time.sleep(1)
    nb.page.reload()
    nb.wait_kernel_idle()
    _wait_legend(nb, 2)
    nb.page.wait_for_function(
        "() => { const c = document.querySelector('.gradwidget canvas.gw-loss-canvas');"
        " if (!c || !c.width) return false;"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n > 2000; }",
        timeout=30_000,
    )
    nb.assert_no_errors()


# A first run long enough to stop by hand (~10 minutes if nobody does).
LONG_RUN = train_cell(100_000, 0.005)


def test_stop_button_ends_the_run_inside_its_cell(nb):
    """The first run executes in its cell, so the kernel reads no widget message until it
    ends: the stop button interrupts the kernel instead, and the widget stays usable."""
    nb.open([CELLS[0], LONG_RUN])
    nb.start_all()
    w = nb.widget()
    nb.page.wait_for_function(
        "() => /step [1-9]\\d*\\/100000/.test("
        "document.querySelector('.gradwidget .gw-progress-text')?.textContent || '')",
        timeout=60_000,
    )
    assert w.locator("button[data-action='pause']").is_disabled()  # cannot reach the kernel
    t0 = time.monotonic()
    w.locator("button[data-action='stop']").click()
    deadline = time.monotonic() + 30
    while nb.cell_state()["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped_in = time.monotonic() - t0
    errors = nb.cell_state()["errors"]
    assert len(errors) == 1 and "KeyboardInterrupt" in errors[0], errors
    status, steps = nb.py("(w.runs[-1]['status'], len(w.runs[-1]['losses']))")
    assert status == "stopped" and 0 < steps < 100_000, (status, steps)
    w.locator(".gw-train-state[data-state='idle']").wait_for(timeout=10_000)
    print(f"\n[{nb.app}] stop ended the in-cell run after {steps} steps in {stopped_in:.2f} s")
    assert stopped_in < 10

    # Still usable: the run button reruns in the background (the kernel is free now).
    nb.execute("w.total_steps = 20")  # a settings change reruns by itself
    nb.wait_py("w.runs[-1]['status']", "done", timeout=60)
    n = nb.py("len(w.runs)")
    w.locator("button[data-action='run']").click()
    done = f"len(w.runs) == {n + 1} and w.runs[-1]['status'] == 'done'"
    assert nb.wait_py(done, True, timeout=60) is True
    nb.assert_no_errors()
