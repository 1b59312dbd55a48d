"""A Lightning ``fit`` in a real JupyterLab: the empty widget gets the first step's graph, and
its colors change while ``fit`` runs in the cell."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser
pytest.importorskip("pytorch_lightning")

SETUP = (
    "import time, torch, torch.nn as nn, gradwidget as gw, pytorch_lightning as pl\n"
    "from torch.utils.data import DataLoader, TensorDataset\n"
    "class Net(pl.LightningModule):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))\n"
    "    def training_step(self, batch, idx):\n"
    "        time.sleep(0.01)  # a few seconds of fit for the page to watch\n"
    "        x, y = batch\n"
    "        scale = 1.0 if self.global_step < 150 else 100.0  # colors visibly move\n"
    "        loss = scale * nn.functional.mse_loss(self.body(x), y)\n"
    "        self.log('train_loss', loss)\n"
    "        return loss\n"
    "    def configure_optimizers(self):\n"
    "        return torch.optim.SGD(self.parameters(), lr=1e-4)\n"
    "torch.manual_seed(0)\n"
    "data = DataLoader(TensorDataset(torch.randn(256, 4), torch.randn(256, 1)), batch_size=8)\n"
    "model, w = Net(), gw.GradWidget()\n"
    "w"
)
FIT = (
    "time.sleep(3)  # the test sees the empty widget first\n"
    "trainer = pl.Trainer(max_steps=300, callbacks=[w.lightning_callback(every=0.1)],\n"
    "                     logger=False, enable_checkpointing=False, enable_progress_bar=False,\n"
    "                     enable_model_summary=False, accelerator='cpu')\n"
    "trainer.fit(model, data)"
)


@pytest.mark.parametrize("app", ["lab"], indirect=True)
def test_lightning_fit_draws_and_colors_the_graph_live(nb):
    nb.open([SETUP, FIT])
    nb.start_all()
    nb.widget().locator(".gw-header").wait_for(timeout=60_000)
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        fills = nb.fills()
        if fills.replace("|", "") and (not seen or seen[-1] != fills):
            seen.append(fills)
            if len(seen) == 2:
                shot = nb.screenshot("test_lightning_mid_fit")
                nb.widget().screenshot(path=str(shot.parent / "lightning_widget.png"))
        if nb.cell_state()["pending"] == 0:
            break
        time.sleep(0.15)
    nb.wait_cells_done(90)
    # Drawn by the callback from the first step (module boxes, named parameters), colored
    # while fit was still running, and the colors moved.
    assert len(seen) >= 2, f"saw {len(seen)} distinct colorings"
    labels = nb.widget().evaluate(
        "el => [...el.querySelectorAll('svg g.node text')].map((t) => t.textContent)"
    )
    assert any("0.weight" in t for t in labels), labels[:20]
    run = nb.py("{k: w.runs[-1][k] for k in ('status', 'note', 'steps')}")
    assert run == {"status": "done", "note": "Lightning fit", "steps": 300}
    assert nb.py("len(w.runs[-1]['losses'])") == 300
    assert nb.py("w.grad_watch['watching']") is False
    assert (
        nb.py("sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())")
        == 0
    )
    # Two layouts: the empty widget's and the drawn graph's; every color was a restyle.
    assert nb.widget().evaluate("el => el.querySelector('.gw-graph').dataset.layouts") == "2"
    # The fit's run: its loss curve and progress, and why the settings are not offered.
    progress = nb.widget().locator(".gw-progress-text")
    assert "step 300/300" in progress.inner_text()
    assert nb.widget().locator(".gw-train .gw-controls-row").first.is_hidden()
    assert "cannot rerun a Lightning fit" in nb.widget().locator(".gw-train-output").inner_text()
    assert nb.widget().locator(".gw-runs canvas.gw-loss-canvas").first.is_visible()
    nb.assert_no_errors()
