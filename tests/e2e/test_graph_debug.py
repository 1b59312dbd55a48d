"""Debugging on the graph in a real JupyterLab, one page: Ctrl+F finds a node inside a
collapsed module and opens it, arrows walk the edges; a collapsed module box carries its
gradients (badge, tooltip, the numbers of ``w.module_stats()``); the path from the output to
where a NaN gradient starts is highlighted; two runs are compared. All but the module opening
are restyles."""

from __future__ import annotations

import time

import pytest
from conftest import ARTIFACTS, NODE_FILLS_JS

pytestmark = pytest.mark.browser

SETUP = (
    "import torch, torch.nn as nn, gradwidget as gw\n"
    "torch.manual_seed(0)\n"
    "class Block(nn.Module):\n"
    "    def __init__(self, d, gate=False):\n"
    "        super().__init__()\n"
    "        self.lin = nn.Linear(d, d)\n"
    "        self.gate = nn.Parameter(torch.ones(d)) if gate else None\n"
    "    def forward(self, x):\n"
    "        h = torch.tanh(self.lin(x))\n"
    "        return h + 0.0 * self.gate if self.gate is not None else h\n"
    "class Scaled(nn.Module):\n"
    "    def __init__(self, d):\n"
    "        super().__init__()\n"
    "        self.lin = nn.Linear(d, d)\n"
    "        self.register_buffer('scale', torch.ones(()))\n"
    "    def forward(self, x):\n"
    "        return self.lin(x) / self.scale\n"
    "model = nn.Sequential(Block(8, gate=True), Scaled(8), Block(8), nn.Linear(8, 1))\n"
    "x = torch.randn(16, 8)\n"
    "w = gw.GradWidget(model, example_input=x, depth=0, expanded=['1'])\n"
    "w"
)
# Seven samples whose colors move (the gradients shrink 10x), for the step slider.
TRAIN = (
    "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    "with w.watch(model, every=0):\n"
    "    for _ in range(7):\n"
    "        opt.zero_grad()\n"
    "        model(x).square().mean().backward()\n"
    "        opt.step()\n"
    "kept = w.history"
)
RUNS = (
    "with torch.no_grad():\n"
    "    model[1].scale.fill_(1.0)\n"
    "def step(opt):\n"
    "    opt.zero_grad()\n"
    "    loss = model(x).square().mean()\n"
    "    loss.backward()\n"
    "    opt.step()\n"
    "    return loss\n"
    "w.watch(model, every=0)\n"
    "w.optimizer = 'SGD'\n"
    "w.lr = 0.01\n"
    "w.train(step, steps=4)\n"
    "w.lr = 0.3\n"
    "assert w.wait(60)"
)
STEP = (
    "with w.watch(model, every=0, trace='always'):\n"
    "    model.zero_grad()\n"
    "    model(x).square().mean().backward()"
)


@pytest.mark.parametrize("app", ["lab"], indirect=True)
def test_module_badges_and_nan_origin_path(nb):
    nb.open([SETUP, TRAIN, STEP])
    nb.run_all(timeout=180)
    widget = nb.widget()
    pane = widget.locator(".gw-graph")
    widget.locator("g.node.gw-module").first.wait_for(timeout=60_000)
    assert pane.get_attribute("data-layouts") == "1"

    # Ctrl+F while the graph has focus: the search box; Enter opens the collapsed module
    # "2" that holds the match (synced `expanded`), selects and centres it.
    pane.focus()
    nb.page.keyboard.press("Control+f")
    find = widget.locator("input.gw-find-input")
    assert find.evaluate("el => document.activeElement === el")
    find.type("2.LIN.weight")
    assert widget.locator(".gw-find").get_attribute("data-matches") == "1"
    assert nb.py("w.search('2.LIN.weight')") == ["leaf:2.lin.weight"]
    find.press("Enter")
    assert nb.wait_py("sorted(w.expanded)", ["1", "2.lin"], timeout=30) == ["1", "2.lin"]
    assert nb.wait_py("w.selected", "leaf:2.lin.weight") == "leaf:2.lin.weight"
    row = nb.py("w.graph['leaf:2.lin.weight'].index")
    current = widget.locator(f"g.node.gw-match-current[data-name='n{row}']")
    current.wait_for(timeout=30_000)
    assert pane.get_attribute("data-layouts") == "2"  # one new layout: the module opened
    widget.screenshot(path=str(_shot("graph-search.png")))
    # Arrows walk the edges from the selected node: down to its first consumer.
    consumer = nb.py(
        "min((w.graph[d].index, d) for s, d in w.graph.edges if s == 'leaf:2.lin.weight')[1]"
    )
    pane.focus()
    nb.page.keyboard.press("ArrowDown")
    assert nb.wait_py("w.selected", consumer) == consumer
    nb.page.keyboard.press("Escape")
    assert nb.wait_py("w.selected", "") == ""
    assert widget.locator("g.node.gw-match").count() == 0
    nb.execute("w.expanded = ['1']")  # back to the first view: its layout is reused
    widget.locator(f"g.node[data-name='n{row}']").wait_for(state="detached", timeout=30_000)
    box = widget.locator("g.node.gw-module[data-zero-params]").first
    box.wait_for(timeout=30_000)

    # The step slider replays the kept samples on this layout: colors and the detail panel
    # follow, nothing is laid out again; "live" snaps back.
    nb.execute("w.selected = 'leaf:3.weight'")
    scrub = widget.locator(".gw-scrub")
    scrub.wait_for(state="visible", timeout=15_000)
    assert int(scrub.get_attribute("data-frames")) == 8 == nb.py("len(kept) + 1")
    norm_cell = widget.locator(".gw-detail td[data-stat='norm']")
    norm_cell.wait_for(timeout=15_000)
    live_fills = widget.evaluate(NODE_FILLS_JS)
    live_norm = norm_cell.inner_text()
    layouts = pane.get_attribute("data-layouts")
    scrub.locator("input.gw-scrub-range").fill("0")
    nb.page.wait_for_function(
        "(el) => el.dataset.pinned !== ''", arg=scrub.element_handle(), timeout=10_000
    )
    nb.page.wait_for_function(
        "([root, fills]) => (" + NODE_FILLS_JS + ")(root) !== fills",
        arg=[widget.element_handle(), live_fills],
        timeout=10_000,
    )
    first = nb.py("kept[0][2]['leaf:3.weight']['norm']")
    nb.page.wait_for_function(
        "([td, live]) => td.textContent !== live", arg=[norm_cell.element_handle(), live_norm]
    )
    assert float(norm_cell.inner_text().split()[0]) == pytest.approx(first, rel=5e-3)
    assert pane.get_attribute("data-layouts") == layouts  # restyle only
    assert float(scrub.get_attribute("data-scrub-ms")) < 1000  # sanity, not a benchmark
    widget.screenshot(path=str(_shot("step-slider.png")))
    scrub.locator("button.gw-scrub-live").click()
    deadline = time.monotonic() + 10
    while (now := widget.evaluate(NODE_FILLS_JS)) != live_fills and time.monotonic() < deadline:
        time.sleep(0.1)
    differ = [
        (i, a, b)
        for i, (a, b) in enumerate(zip(live_fills.split("|"), now.split("|"), strict=True))
        if a != b
    ]
    assert not differ, differ[:10]
    assert norm_cell.inner_text() == live_norm and scrub.get_attribute("data-pinned") == ""
    nb.execute("w.selected = ''")

    # The box of module "0" (a Block whose gate gets an all-zero gradient): its badge and
    # its numbers are those of w.module_stats().
    agg = nb.py("{p: w.module_stats()[p] for p in ('0', '2')}")
    boxes = widget.locator("g.node.gw-module")
    by_path = nb.py("w.view_modules")
    first = widget.locator(f"g.node.gw-module[data-name='{_name(by_path, '0')}']")
    assert first.get_attribute("data-zero-params") == "1" == str(agg["0"]["zero"])
    assert first.locator("text.gw-mod-badge").text_content() == "1 zero"
    assert float(first.get_attribute("data-grad-max")) == pytest.approx(
        agg["0"]["max_norm"], rel=1e-5
    )
    assert boxes.count() >= 2
    first.hover()
    tip = widget.locator(".gw-tooltip")
    tip.wait_for(state="visible", timeout=10_000)
    assert "‖grad‖ max / mean" in tip.inner_text()
    assert "1 all-zero" in tip.inner_text()
    nb.page.mouse.move(5, 5)
    tip.wait_for(state="hidden", timeout=10_000)
    widget.screenshot(path=str(_shot("module-badges.png")))

    # Division by zero in module "1" (open): the lint names it, the path is drawn.
    nb.execute("with torch.no_grad():\n    model[1].scale.zero_()\n" + STEP)
    origin = nb.py("w.nonfinite_origin()")
    assert nb.py("(w.graph[w.nonfinite_origin()].module, w.graph[w.nonfinite_origin()].op)") == [
        "1",
        "DivBackward0",
    ]
    nb.page.wait_for_function(
        "(id) => document.querySelector('.gradwidget').dataset.nanOrigin === id",
        arg=origin,
        timeout=15_000,
    )
    marked = widget.locator("g.node.gw-nan-origin")
    assert marked.count() == 1
    assert "starts here" in marked.locator("text.gw-badge").text_content()
    assert widget.locator("g.edge.gw-nan-edge").count() >= 1
    assert widget.locator("g.node.gw-nan-path").count() >= 2
    lint = widget.locator(".gw-lint-item[data-code='nonfinite']")
    lint.wait_for(timeout=15_000)
    assert "NaN gradient starts at 1 · DivBackward0" in lint.inner_text()
    widget.screenshot(path=str(_shot("nan-origin.png")))
    # Two Trainer runs from the same start (lr 0.01, then 0.3), compared in the header.
    nb.execute(RUNS)
    pick = widget.locator(".gw-compare-pick")
    pick.wait_for(state="visible", timeout=15_000)
    run_a, run_b = nb.py("[r['id'] for r in w.runs]")
    pick.locator("select.gw-compare-a").select_option(str(run_a))
    pick.locator("select.gw-compare-b").select_option(str(run_b))
    assert nb.wait_py("w.compare_runs", [run_a, run_b]) == [run_a, run_b]
    nb.page.wait_for_function(
        "(el) => Number(el.dataset.colored) > 0", arg=pick.element_handle(), timeout=15_000
    )
    assert widget.locator("g.node.gw-compare").count() >= 3
    assert "at step 4" in pick.locator(".gw-compare-note").inner_text()
    assert pick.locator(".gw-compare-legend").is_visible()
    widget.screenshot(path=str(_shot("compare-runs.png")))
    # Every mark was a restyle: Graphviz laid out the first view and the opened module only.
    assert pane.get_attribute("data-layouts") == "2"
    nb.assert_no_errors()


def _name(view_modules: dict, path: str) -> str:
    return next(k for k, v in view_modules.items() if v == path)


def _shot(name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
