"""Live gradients in a real JupyterLab: node colors change while a plain training loop runs."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

SETUP = (
    "import time, torch, torch.nn as nn, gradwidget as gw\n"
    "torch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),"
    " nn.Linear(16, 1))\n"
    "x, y = torch.randn(32, 4), torch.randn(32, 1)\n"
    "w = gw.GradWidget(model, example_input=x)\n"
    "w"
)
# A plain loop (no %%train): the kernel is busy, trait updates from it still reach the page.
# The loss is scaled up halfway so gradient magnitudes (and colors) visibly move.
TRAIN = (
    "time.sleep(4)  # the test reads the colors before training\n"
    "opt = torch.optim.SGD(model.parameters(), lr=1e-4)\n"
    "with w.watch(model, every=0.1):\n"
    "    t0 = time.time()\n"
    "    while time.time() - t0 < 6:\n"
    "        scale = 1.0 if time.time() - t0 < 3 else 100.0\n"
    "        opt.zero_grad()\n"
    "        loss = scale * nn.functional.mse_loss(model(x), y)\n"
    "        loss.backward()\n"
    "        opt.step()\n"
    "        time.sleep(0.002)\n"
    "stats = w.stats()"
)
NAN = (
    "with w.watch(model, every=0):\n"
    "    with torch.no_grad():\n"
    "        model[2].weight[0, 0] = float('nan')\n"
    "    nn.functional.mse_loss(model(x), y).backward()\n"
    "    time.sleep(0.5)"
)


@pytest.mark.parametrize("app", ["lab"], indirect=True)
def test_colors_change_during_training(nb):
    nb.open([SETUP, TRAIN])
    nb.start_all()
    nb.widget().locator("svg g.node").first.wait_for(timeout=60_000)
    initial = nb.fills()
    assert initial.replace("|", "") == "", "no gradient colors before watching"

    seen: list[str] = []
    log: list[str] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        fills = nb.fills()
        log.append(
            nb.page.evaluate(
                "() => { const l = document.querySelector('.gradwidget .gw-legend');"
                " return l ? `${l.dataset.received}/${l.dataset.updates}` : '-'; }"
            )
            + f" t={time.monotonic():.2f}"
        )
        if fills.replace("|", "") and (not seen or seen[-1] != fills):
            seen.append(fills)
            if len(seen) == 2:
                nb.screenshot("test_live_mid_run")
        # The cells' prompts, not the kernel status: that can read idle while the cell runs.
        if seen and nb.cell_state()["pending"] == 0:
            break
        time.sleep(0.15)
    nb.wait_cells_done(60)
    samples = nb.py("w.watcher.samples")
    updates = [
        m
        for m in nb.ws
        if m.direction == "recv"
        and m.msg_type == "comm_msg"
        and ["grad_stats"] in ((m.content.get("data") or {}).get("buffer_paths") or [])
    ]
    # Colored while the cell was still running, and the colors moved between samples
    # (uncolored -> one coloring -> another: two distinct colorings prove the change).
    assert len(seen) >= 2, (
        f"saw {len(seen)} distinct colorings from {samples} samples, {len(updates)} updates "
        f"on the websocket at {[round(m.at, 2) for m in updates]}; legend over time: {log}"
    )
    # Throttled by wall clock (every=0.1 s over ~6 s): a handful per second, no flood.
    # (Fewer under load: the default overhead budget also spaces samples.)
    assert 3 <= samples <= 6 / 0.1 + 5, samples
    if updates:  # the harness could read the frames: one message per sample, no more
        assert len(updates) <= samples + 1, (len(updates), samples)
    n_colored = [sum(1 for f in s.split("|") if f) for s in seen]
    assert max(n_colored) >= 5, n_colored
    legend = nb.widget().locator(".gw-legend")
    assert legend.is_visible()
    assert int(legend.get_attribute("data-updates")) >= 3
    assert nb.py("len(stats) >= 10 and all(s['nonfinite'] == 0 for s in stats.values())")
    assert nb.py("w.watcher.hook_count == 0 and len(model._forward_hooks) == 0")
    assert nb.py("w.grad_watch['watching']") is False

    # Selecting a node opens its live detail panel with a histogram and a sparkline.
    nb.execute("w.selected = 'leaf:2.bias'")
    detail = nb.widget().locator(".gw-detail")
    detail.wait_for(state="visible", timeout=15_000)
    assert "2.bias" in detail.locator(".gw-panel-title").inner_text()
    assert detail.locator("canvas.gw-hist").is_visible()
    assert detail.locator("canvas.gw-spark").is_visible()
    assert detail.locator(".gw-values-table tr").count() == 17  # header + 16 values
    assert nb.widget().locator(".gw-flow canvas.gw-flow-canvas").is_visible()

    # NaN gradients: marked on the node and reported by the lint, no exception.
    nb.execute(NAN)
    nb.page.wait_for_function(
        "() => document.querySelectorAll('.gradwidget svg g.node.gw-nonfinite').length > 0",
        timeout=15_000,
    )
    lint = nb.widget().locator(".gw-lint-item[data-code='nonfinite']")
    lint.wait_for(timeout=15_000)
    assert "detect_anomaly" in lint.inner_text()
    # Every color above was a restyle of the first layout: Graphviz ran once.
    assert nb.widget().evaluate("el => el.querySelector('.gw-graph').dataset.layouts") == "1"
    nb.assert_no_errors()
