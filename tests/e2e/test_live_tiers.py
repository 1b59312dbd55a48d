"""The two sampling tiers in a real JupyterLab: while a plain training loop runs under
``w.watch()``, the widget shows the tiers' rates ("grads 5 Hz · intermediates 1 Hz") and
the gradient-flow view gains its update-to-weight ratio row."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.browser

#: The loop runs until the test drops this file in the notebook's directory (or a cap).
STOP = "stop-training"
SETUP = (
    "import os, time, torch, torch.nn as nn, gradwidget as gw\n"
    "torch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(),"
    " nn.Linear(32, 1))\n"
    "x, y = torch.randn(64, 8), torch.randn(64, 1)\n"
    "w = gw.GradWidget(model, example_input=x)\n"
    "w"
)
# A plain loop: w.watch(), then a for loop with an optimizer (no %%train). It ends when the
# test has seen what it needs (the stop file), so a slow machine only makes it run longer.
TRAIN = (
    "opt = torch.optim.Adam(model.parameters(), lr=1e-3)\n"
    "w.watch()\n"
    "t0 = time.time()\n"
    "for step in range(1_000_000):\n"
    "    opt.zero_grad()\n"
    "    loss = nn.functional.mse_loss(model(x), y)\n"
    "    loss.backward()\n"
    "    opt.step()\n"
    "    time.sleep(0.005)\n"
    f"    if os.path.exists({STOP!r}) or time.time() - t0 > 150:\n"
    "        break\n"
    "w.unwatch()"
)
RATES = re.compile(r"grads \d+(\.\d+)? Hz")


@pytest.mark.parametrize("app", ["lab"], indirect=True)
def test_rates_and_update_ratio_while_training(nb):
    (nb.server.root / STOP).unlink(missing_ok=True)
    nb.open([SETUP, TRAIN])
    nb.start_all()
    widget = nb.widget()
    widget.locator("svg g.node").first.wait_for(timeout=90_000)
    rates = widget.locator(".gw-rates")
    flow = widget.locator(".gw-flow")
    ratio = widget.locator(".gw-ratio canvas.gw-ratio-canvas")

    seen: dict[str, str] = {}
    log: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = rates.inner_text() if rates.count() and rates.is_visible() else ""
            running = nb.cell_state()["pending"] > 0
            n_ratios = (flow.get_attribute("data-ratios") or "0") if flow.count() else "0"
            log.append(f"{text!r} ratios={n_ratios} running={running}")
            # Only what was on screen while the loop was still running counts.
            if running and RATES.search(text):
                seen.setdefault("rates", text)
                if "intermediates" in text:
                    seen["both"] = text
            if running and int(n_ratios) > 0 and ratio.is_visible():
                seen.setdefault("ratio", n_ratios)
            if "both" in seen and "ratio" in seen:
                break
            if not running and nb.cell_state()["errors"]:
                break
            time.sleep(0.3)
        assert "rates" in seen, f"no rates line while the cell ran; over time: {log[-20:]}"
        assert "ratio" in seen, f"no update-ratio row while the cell ran; over time: {log[-20:]}"
        assert "both" in seen, f"the intermediates' rate never showed; over time: {log[-20:]}"

        # Select a parameter on the graph (a front-end selection: the busy kernel hears
        # of it later): its detail panel shows the update ratio next to the moments.
        node = widget.locator("svg g.node", has_text="2.weight").first
        if node.count():
            node.click()
            detail = widget.locator(".gw-detail")
            detail.wait_for(state="visible", timeout=30_000)
            cell = detail.locator("td[data-stat='update_ratio']")
            nb.page.wait_for_function(
                "(td) => /\\d/.test(td.textContent)", arg=cell.element_handle(), timeout=30_000
            )
        nb.page.mouse.move(5, 5)  # no tooltip over the graph in the screenshot
        widget.locator(".gw-tooltip").first.wait_for(state="hidden", timeout=10_000)
        if nb.cell_state()["pending"] > 0:  # the widget mid-run (docs/img/live-tiers.png)
            page = nb.screenshot("live-tiers-page")
            nb.page.set_viewport_size({"width": 1400, "height": 1600})  # the whole widget
            nb.page.wait_for_timeout(500)
            widget.screenshot(path=str(page.parent / "live-tiers.png"))
    finally:
        (nb.server.root / STOP).write_text("")
    nb.wait_cells_done(120)

    # Each parameter's ratio is on the row (NaN for intermediates is skipped, never drawn).
    n_params = len(nb.py("[n for n, _ in model.named_parameters()]"))
    assert int(flow.get_attribute("data-ratios")) == n_params
    assert int(flow.get_attribute("data-layers")) == n_params
    assert nb.py("w.grad_watch['leaf_samples'] > 0 and w.grad_watch['op_samples'] > 0")
    assert RATES.search(rates.inner_text())

    # An intermediate: whatever its samples left out (NaN on the wire) shows as "—" or as
    # a kept value, never as "NaN"; no empty histogram is drawn.
    op = nb.py("next(k for k, v in w.stats().items() if v['kind'] == 'op')")
    nb.execute(f"w.selected = {op!r}")
    detail = widget.locator(".gw-detail")
    nb.page.wait_for_function(
        "([el, sel]) => !el.hidden && el.dataset.node === sel",
        arg=[detail.element_handle(), op],
        timeout=30_000,
    )
    text = detail.inner_text()
    assert "NaN" not in text.replace("NaN/Inf", ""), text
    hist = detail.locator("canvas.gw-hist")
    if "not sampled" in detail.locator(".gw-detail-hist-title").inner_text():
        assert not hist.is_visible()
    else:
        assert hist.is_visible()
    nb.assert_no_errors()
