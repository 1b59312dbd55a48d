"""Hosts without widget composition, in a real JupyterLab: the graph widget still renders.

Such a host (an anywidget front-end older than 0.11, or one whose ``host.getWidget`` never
answers) cannot hand graph widgets the page's loader widget; each graph widget then asks
the kernel for its own copy of Graphviz and the front-end and says so once, in the widget.
The page switch ``globalThis.__gradwidget_no_composition`` (js/src/stub.js) makes JupyterLab
behave like such a host.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

CELLS = [
    "import torch, torch.nn as nn, gradwidget as gw\n"
    "torch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))\n"
    "x = torch.randn(4, 3)\n"
    "w = gw.GradWidget(model, example_input=x)\n"
    "w",
    "w2 = gw.GradWidget(model(x).sum())\nw2",
]


@pytest.mark.parametrize("app", ["lab"], indirect=True)
def test_graph_renders_without_widget_composition(nb):
    nb.page.add_init_script("globalThis.__gradwidget_no_composition = true;")
    nb.open(CELLS)
    nb.run_all()
    for i, expected in enumerate((nb.py("len(w.graph)"), nb.py("len(w2.graph)"))):
        nb.page.wait_for_function(
            "([i, n]) => { const w = document.querySelectorAll('.gradwidget')[i];"
            " return w && w.querySelectorAll('svg g.node').length === n; }",
            arg=[i, expected],
        )
    notes = nb.page.locator(".gradwidget .gw-host-note")
    assert notes.count() == 2  # once per widget, not per update
    text = notes.first.inner_text()
    assert "cannot share gradwidget's front-end" in text and "MB" in text, text
    assert "composition switched off" in text, text
    # Styled like anywhere else (the copy brings the stylesheet), no error text.
    header = nb.widget(0).locator(".gw-header")
    assert header.evaluate("e => getComputedStyle(e).display") == "flex"
    assert nb.page.locator(".gradwidget .gw-error:visible").count() == 0
    # The second copy reuses the page's module and Graphviz (same content digest).
    assert nb.page.evaluate("() => globalThis.__gradwidget_frontend_loads") == 1
    assert nb.page.evaluate("() => globalThis.__gradwidget_viz_compiles") == 1
    # Still interactive: a click selects, synced to the kernel.
    nb.widget(0).locator("svg g.node").first.click()
    assert nb.wait_py("w.selected != ''", True) is True
    nb.assert_no_errors()
