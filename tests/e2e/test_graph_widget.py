"""The graph widget in a real JupyterLab 4 and Notebook 7, driven by headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

#: Per-widget budget for the second and later graph widgets on a page (the WASM ships once).
COMM_OPEN_BUDGET = 100_000

UNITS = (
    "import gradwidget._dot as _gd\n"
    "def units(w):\n"
    "    return len(set(_gd.view_of(w.graph, w.depth, w.expanded).unit.values()))\n"
)

MLP_CELLS = [
    "import torch, torch.nn as nn, gradwidget as gw\n" + UNITS,
    "torch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))\n"
    "x = torch.randn(8, 2)\n"
    "w = gw.GradWidget(model, example_input=x)\n"
    "w",
    "w2 = gw.GradWidget(model, example_input=x)\nw2",
    # A Graph as the last expression displays as the widget too.
    "gw.capture(model(x).sum())",
    # A big model's default view: its comm_open must stay small too (packed node table).
    "layer24 = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128,"
    " batch_first=True)\n"
    "enc24 = nn.TransformerEncoder(layer24, num_layers=24, enable_nested_tensor=False)\n"
    "w24 = gw.GradWidget(enc24, example_input=torch.randn(2, 16, 64))\n"
    "w24",
]

TRANSFORMER_CELLS = [
    "import torch, torch.nn as nn, gradwidget as gw\n" + UNITS,
    "torch.manual_seed(0)\n"
    "layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32,"
    " batch_first=True)\n"
    "enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)\n"
    "w = gw.GradWidget(enc, example_input=torch.randn(2, 5, 16), depth=1)\n"
    "w",
]


def svg_nodes(nb, index: int = 0):
    return nb.widget(index).locator("svg g.node")


def wait_units(nb, count: int, index: int = 0) -> None:
    """Wait until widget ``index`` shows exactly ``count`` boxes."""
    nb.page.wait_for_function(
        "([i, n]) => document.querySelectorAll('.gradwidget')[i]"
        "?.querySelectorAll('svg g.node').length === n",
        arg=[index, count],
        timeout=30_000,
    )


LAYOUTS_JS = "el => Number(el.querySelector('.gw-graph').dataset.layouts || 0)"
MARK_SVG_JS = "el => { el.querySelector('.gw-graph svg').__gwMark = true; }"
SAME_SVG_JS = "el => el.querySelector('.gw-graph svg')?.__gwMark === true"


def layouts(nb, index: int = 0) -> int:
    """Graphviz layouts widget ``index`` ran so far (a cached layout reused is not one)."""
    return nb.widget(index).evaluate(LAYOUTS_JS)


def test_mlp_widget(nb):
    nb.open(MLP_CELLS)
    nb.run_all()
    expected = nb.py("units(w)")
    assert expected == nb.py("len(w.graph)") == 10  # small: drawn in full, no module boxes
    wait_units(nb, expected, 0)
    nb.widget(0).evaluate(MARK_SVG_JS)
    assert layouts(nb) == 1
    wait_units(nb, expected, 1)
    wait_units(nb, expected + 1, 2)  # the captured graph has the .sum() too
    wait_units(nb, nb.py("units(w24)"), 3)

    # Graphviz compiled and the front-end imported once for four widgets; their bytes
    # crossed the wire once, in the loader; every graph widget's comm_open is small.
    assert nb.page.evaluate("() => globalThis.__gradwidget_viz_compiles") == 1
    assert nb.page.evaluate("() => globalThis.__gradwidget_frontend_loads") == 1
    assert nb.page.locator("style[data-gradwidget]").count() == 1
    loaders = nb.comm_opens("viz_gz")
    graphs = nb.comm_opens("dot")
    assert len(loaders) == 1 and loaders[0].size > 300_000
    assert len(graphs) == 4
    assert all(g.size <= COMM_OPEN_BUDGET for g in graphs[1:]), [g.size for g in graphs]
    print(
        f"\n[{nb.app}] comm_open bytes: loader {loaders[0].size}, graph widgets",
        [g.size for g in graphs],
        "(MLP, MLP, captured MLP, TransformerEncoder-24)",
    )

    # The outputs also carry a static SVG for saved notebooks, but the app shows the live
    # widget: no rendered SVG output next to (or instead of) it.
    assert nb.py("'image/svg+xml' in w._repr_mimebundle_()[0]") is True
    assert nb.page.locator(".jp-RenderedSVG, .jp-RenderedImage").count() == 0

    # Header shows the saved-for-backward total.
    header = nb.widget(0).locator(".gw-summary")
    assert re.search(r"saved for backward: \d", header.inner_text())

    # Hover: tooltip with kind, op, shape, dtype, module, source, saved bytes.
    addmm = nb.py("[n.id for n in w.graph.nodes if n.op == 'AddmmBackward0'][0]")
    index = nb.py(f"w.graph[{addmm!r}].index")
    node = nb.widget(0).locator(f"svg g.node[data-name='n{index}']")
    node.hover()
    tip = nb.widget(0).locator(".gw-tooltip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    for part in (
        "kind: op",
        "op: AddmmBackward0",
        "shape: (8, 16)",
        "dtype: float32",
        "module: 0",
        "source:",
        "saved for backward:",
    ):
        assert part in text, (part, text)

    # Click selects, synced to the kernel.
    node.click()
    assert nb.wait_py("w.selected", addmm) == addmm
    assert "gw-selected" in (node.get_attribute("class") or "")

    # Python-set selection highlights (and clears the old one).
    leaf = nb.py("[n.id for n in w.graph.nodes if n.kind == 'leaf'][0]")
    leaf_index = nb.py(f"w.graph[{leaf!r}].index")
    nb.execute(f"w.selected = {leaf!r}")
    leaf_node = nb.widget(0).locator(f"svg g.node[data-name='n{leaf_index}']")
    nb.page.wait_for_function(
        "(el) => el.classList.contains('gw-selected')", arg=leaf_node.element_handle()
    )
    assert "gw-selected" not in (node.get_attribute("class") or "")

    # Dark theme: the widget follows JupyterLab's CSS variables.
    light_bg = nb.widget(0).evaluate("el => getComputedStyle(el).backgroundColor")
    nb.set_theme("JupyterLab Dark")
    nb.page.wait_for_function(
        "([el, bg]) => getComputedStyle(el).backgroundColor !== bg",
        arg=[nb.widget(0).element_handle(), light_bg],
    )
    text_fill = (
        nb.widget(0).locator("svg g.node text").first.evaluate("el => getComputedStyle(el).fill")
    )
    rgb = [int(v) for v in re.findall(r"\d+", text_fill)[:3]]
    assert sum(rgb) > 3 * 160, text_fill  # light text on dark fills
    nb.screenshot(f"mlp-dark-{nb.app}")
    # Hover, selection (both ways) and the theme only restyled: the first layout's SVG is
    # still on the page and Graphviz ran once.
    assert nb.widget(0).evaluate(SAME_SVG_JS) and layouts(nb) == 1
    nb.assert_no_errors()


def test_transformer_expand_collapse(nb):
    nb.open(TRANSFORMER_CELLS)
    nb.run_all()
    collapsed = nb.py("units(w)")
    assert nb.py("len(w.view_modules)") >= 2  # the two encoder layers are boxes
    wait_units(nb, collapsed)
    assert nb.py("len(w.graph)") > collapsed
    assert layouts(nb) == 1

    # Click a collapsed module: it expands, synced to the kernel, and shows more nodes.
    nb.widget(0).locator(".gw-fit").click()
    name, path = nb.py("sorted(w.view_modules.items())[0]")
    nb.widget(0).locator(f"svg g.node[data-name='{name}']").click()
    assert nb.wait_py("w.expanded", [path]) == [path]
    opened = nb.py("units(w)")
    assert opened > collapsed
    wait_units(nb, opened)
    assert layouts(nb) == 2
    nb.screenshot(f"transformer-expanded-{nb.app}")

    # Hover on a collapsed box tells its module; on a cluster frame, how to collapse.
    other = nb.py("sorted(w.view_modules.items())")
    if other:
        nb.widget(0).locator(".gw-fit").click()
        nb.widget(0).locator(f"svg g.node[data-name='{other[0][0]}']").hover()
        assert "click to expand" in nb.widget(0).locator(".gw-tooltip").inner_text()

    # Click the expanded module's frame label: collapses again.
    nb.widget(0).locator(".gw-fit").click()
    label = nb.widget(0).locator(f"svg g.cluster[data-module='{path}'] > text").first
    label.click()
    assert nb.wait_py("units(w)", collapsed) == collapsed
    wait_units(nb, collapsed)
    assert layouts(nb) == 2  # back to a view laid out before: its layout is reused

    # Depth control: depth 0 draws the whole encoder as one box.
    nb.widget(0).locator(".gw-depth select").select_option("0")
    assert nb.wait_py("w.depth", 0) == 0
    wait_units(nb, nb.py("units(w)"))
    nb.assert_no_errors()


@pytest.mark.parametrize("app", ["lab"], indirect=True)
def test_pan_zoom_export_and_errors(nb):
    nb.open(MLP_CELLS[:2])
    nb.run_all()
    wait_units(nb, 10)
    svg = nb.widget(0).locator("svg.gw-svg")
    before = svg.get_attribute("viewBox")
    box = nb.widget(0).locator(".gw-graph").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # A plain wheel over an unfocused graph scrolls the page (no zoom) and shows a hint.
    nb.page.mouse.move(cx, cy)
    nb.page.mouse.wheel(0, -300)
    hint = nb.widget(0).locator(".gw-zoom-hint")
    hint.wait_for(state="visible")
    assert "scroll to zoom" in hint.inner_text()
    nb.screenshot(f"zoom-hint-{nb.app}")
    assert svg.get_attribute("viewBox") == before
    # Ctrl + wheel (also what a trackpad pinch sends) zooms.
    nb.page.keyboard.down("Control")
    nb.page.mouse.wheel(0, -300)
    nb.page.keyboard.up("Control")
    zoomed = svg.get_attribute("viewBox")
    assert float(zoomed.split()[2]) < float(before.split()[2])
    # Once the graph has focus (clicked), the plain wheel zooms too.
    nb.widget(0).locator(".gw-graph").focus()
    nb.page.mouse.wheel(0, -300)
    assert float(svg.get_attribute("viewBox").split()[2]) < float(zoomed.split()[2])
    zoomed = svg.get_attribute("viewBox")
    nb.page.mouse.move(cx + 5, cy + 5)
    nb.page.mouse.down()
    nb.page.mouse.move(cx + 80, cy + 60, steps=5)
    nb.page.mouse.up()
    panned = svg.get_attribute("viewBox")
    assert panned.split()[:2] != zoomed.split()[:2]
    assert nb.py("w.selected") == ""  # a drag is not a click
    nb.widget(0).locator(".gw-fit").click()
    assert svg.get_attribute("viewBox") != panned

    with nb.page.expect_download() as dl:
        nb.widget(0).locator(".gw-export").click()
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    assert text.startswith("<svg") and text.count('class="node') == 10
    assert re.search(r'<rect [^>]*fill="#ffffff"', text)  # readable in dark viewers too
    with nb.page.expect_download() as dl:
        nb.widget(0).locator(".gw-export-png").click()
    png = Path(dl.value.path()).read_bytes()
    dl.value.save_as(nb.screenshot(f"export-page-{nb.app}").with_name(f"export-{nb.app}.png"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and dl.value.suggested_filename.endswith(".png")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    vb = [float(v) for v in svg.get_attribute("data-base-view-box").split()]
    assert (width, height) == (round(vb[2] * 4 / 3 * 2), round(vb[3] * 4 / 3 * 2))
    assert len(png) > 5_000  # drawn, not a blank canvas

    # Bad DOT and over-the-limit views: readable messages inside the widget.
    nb.execute("w.dot = 'digraph { a -> }'")
    err = nb.widget(0).locator(".gw-error")
    err.wait_for()
    assert "Graphviz could not lay out" in err.inner_text()
    nb.execute("w.view_error = 'This view has 30,000 nodes, over the limit'")
    nb.page.wait_for_function(
        "() => document.querySelector('.gradwidget .gw-limit')?.textContent.includes('30,000')"
    )
    nb.execute("w.view_error = ''; w.depth = 0")
    nb.execute("w.depth = None")
    wait_units(nb, 10)
    # A syntax error is reported by Graphviz on the console; nothing else may be.
    bad = [e for e in nb.unexpected_errors() if "syntax error" not in e.lower()]
    assert not bad, bad


BIG_CELLS = [
    "import torch, torch.nn as nn, gradwidget as gw\n" + UNITS,
    "torch.manual_seed(0)\n"
    "layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16,"
    " batch_first=True)\n"
    "enc = nn.TransformerEncoder(layer, num_layers=36, enable_nested_tensor=False)\n"
    "w = gw.GradWidget(enc, example_input=torch.randn(2, 3, 8))\n"
    "w",
]

STATUS_LOG_JS = """
el => {
  const status = el.querySelector('.gw-status');
  window.__gwStatusLog = [];
  new MutationObserver(() => {
    if (!status.hidden) window.__gwStatusLog.push(status.textContent);
  }).observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
}
"""


@pytest.mark.parametrize("worker", [True, False], ids=["worker", "no-worker"])
@pytest.mark.parametrize("app", ["lab"], indirect=True)
def test_expand_everything_on_a_2000_node_graph(nb, worker):
    """The whole 36-layer encoder drawn open: a "laying out" indicator, then every node;
    laid out in a Web Worker, or on the page where no worker can start."""
    nb.open(BIG_CELLS)
    nb.run_all()
    wait_units(nb, nb.py("units(w)"))
    n = nb.py("len(w.graph)")
    assert n >= 2000, n
    nb.widget(0).evaluate(STATUS_LOG_JS)
    # A 20 ms heartbeat on the page: its longest gap is the longest the tab froze.
    nb.page.evaluate(
        "() => { let last = performance.now(); window.__gwMaxGap = 0;"
        " window.__gwBeat = setInterval(() => { const t = performance.now();"
        " window.__gwMaxGap = Math.max(window.__gwMaxGap, t - last); last = t; }, 20); }"
    )
    if not worker:  # the worker starts on the first big view: none can start now
        nb.page.evaluate("() => { window.Worker = undefined; }")
    nb.execute("w.depth = w.max_depth")
    assert nb.py("units(w)") == n  # nothing left collapsed
    nb.page.wait_for_function(
        "([n]) => document.querySelectorAll('.gradwidget svg g.node').length === n",
        arg=[n],
        timeout=120_000,
    )
    log = nb.page.evaluate("() => window.__gwStatusLog")
    assert any(f"laying out {n:,} boxes" in t for t in log), log
    assert nb.widget(0).locator(".gw-status").is_hidden()
    pane = nb.widget(0).locator(".gw-graph")
    ms = float(pane.get_attribute("data-render-ms"))
    layout_ms = float(pane.get_attribute("data-layout-ms"))
    gap = nb.page.evaluate("() => { clearInterval(window.__gwBeat); return window.__gwMaxGap; }")
    print(
        f"\n[{nb.app}] full view of {n} nodes: Graphviz layout {layout_ms:.0f} ms "
        f"({'worker' if worker else 'page'}), "
        f"shown after {ms:.0f} ms; longest freeze of the page meanwhile {gap:.0f} ms"
    )
    if worker:
        # The page froze only to parse and show the SVG, never for the whole layout.
        assert gap < layout_ms, (gap, layout_ms)
    else:
        # The fallback really laid out on the page: the freeze covers the whole layout.
        assert gap >= 0.9 * layout_ms, (gap, layout_ms)
    nb.screenshot(f"expand-everything-2000-{'worker' if worker else 'page'}")
    nb.assert_no_errors()
