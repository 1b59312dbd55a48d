"""Browser rendering of the graph widget: WASM Graphviz layout + SVG, vs system ``dot``.

Run: ``.venv/bin/python bench/bench_render.py`` (or ``make bench``); needs the built front-end
(``cd js && npm run build``) and Chromium (``$GRADWIDGET_CHROMIUM``, default /usr/bin/chromium).

What is measured, for an MLP, a small ResNet-like CNN and 6-, 24- and 36-layer
``nn.TransformerEncoder`` models (recorded forward passes, as ``GradWidget(model,
example_input=x)`` does), each in its default collapsed view and its full view:

* **browser ms**: headless Chromium loads a static page with the *built* widget bundle
  (``gradwidget/static/widget.js``, mounted through ``stub.js``) and the WASM Graphviz module
  shipped by the loader widget;
  each sample mounts a fresh widget view on the real widget state (``GradWidget.get_state()``)
  and reads the time the graph view measured with ``performance.now()`` around layout, SVG
  insertion and post-processing (``data-render-ms``; Graphviz is already compiled, as it is
  for every widget after the first on a page). Median of several samples.
* **dot ms**: the system ``dot -Tsvg`` on the same DOT text (wall clock, median).
* **comm_open KB**: what creating a widget sends to the browser: its JSON state plus binary
  buffers, i.e. the comm_open payload. The 1st widget on a page also brings the loader
  widget (once per kernel: gzipped Graphviz and the front-end code); the 2nd and later send
  only the ``_esm`` stub, settings and this graph's packed data (node and module tables,
  DOT), the part that grows with the graph. The e2e tests measure the real websocket frames.

The page mounts each view through the real ``stub.js``, handed the front-end module and
Graphviz the way the loader widget hands them.

Budgets (exit 1 and a ``FAIL:`` line when missed): the 24-layer TransformerEncoder's default
view renders in <= 300 ms; the ~2,000-node full view of the 36-layer encoder renders at all
(no error); every model's 2nd-widget comm_open <= 100 KB, in both views.
``BENCH_QUICK=1``: fewer samples.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
from _browser import ORIGIN, launch_options, route_static
from _models import ResNet, encoder
from ipywidgets.widgets.widget import _remove_buffers

import gradwidget as gw
import gradwidget._constants
from gradwidget._dot import view_of
from gradwidget._loader import get_loader

QUICK = bool(os.environ.get("BENCH_QUICK"))
SAMPLES = 2 if QUICK else 5
BUDGET_24_DEFAULT_MS = 300.0
BUDGET_COMM_OPEN = 100_000


def models() -> list[tuple[str, nn.Module, torch.Tensor, bool]]:
    """(name, model, input, default view only?)"""
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    return [
        ("MLP", mlp, torch.randn(32, 64), False),
        ("ResNet-like CNN", ResNet(), torch.randn(2, 3, 32, 32), False),
        ("TransformerEncoder-6", encoder(6), torch.randn(2, 16, 64), False),
        ("TransformerEncoder-24", encoder(24), torch.randn(2, 16, 64), False),
        ("TransformerEncoder-36", encoder(36), torch.randn(2, 16, 64), False),
    ]


# ---- the static page -------------------------------------------------------------------------
#: The shared constants the loader widget hands the front-end (the page skips the loader).
CONSTANTS = json.dumps(gradwidget._constants.frontend())
PAGE = f"""<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="{ORIGIN}/static/widget.css"></head>
<body style="width:1200px"><script type="module">
// The per-instance stub, handed the front-end (with the kernel's shared constants) and
// Graphviz as the loader widget hands them.
import widget from "{ORIGIN}/static/stub.js";
const CONSTANTS = {CONSTANTS};
const frontend = import("{ORIGIN}/static/widget.js").then((m) => (m.setConstants(CONSTANTS), m));
const mod = await import("{ORIGIN}/static/viz.mjs");
const viz = mod.instance();
await viz;
await frontend;
window.__gwBench = {{
  async render(state) {{
    // Binary buffers back at their paths, as ipywidgets does with a comm_open's buffers.
    for (const [path, v] of state.__buffers || []) {{
      const bin = Uint8Array.from(atob(v), (c) => c.charCodeAt(0));
      let obj = state;
      for (const key of path.slice(0, -1)) obj = obj[key];
      obj[path[path.length - 1]] = new DataView(bin.buffer);
    }}
    delete state.__buffers;
    const handlers = new Map();
    const model = {{
      get: (k) => state[k],
      set: (k, v) => {{ state[k] = v; }},
      on: (e, f) => {{ if (!handlers.has(e)) handlers.set(e, new Set()); handlers.get(e).add(f); }},
      off: (e, f) => handlers.get(e)?.delete(f),
      save_changes() {{}},
      send() {{}},
      widget_manager: {{}},
    }};
    const host = {{ getWidget: async () => ({{ exports: {{ viz, frontend }} }}) }};
    const el = document.createElement("div");
    document.body.replaceChildren(el);
    const cleanup = await widget.render({{ model, el, host }});
    const t0 = performance.now();
    while (!el.querySelector(".gw-graph")?.dataset.renderMs) {{
      const err = el.querySelector(".gw-error");
      if (err) return {{ error: err.textContent }};
      if (performance.now() - t0 > 120000) return {{ error: "timeout" }};
      await new Promise((r) => setTimeout(r, 5));
    }}
    const pane = el.querySelector(".gw-graph");
    const out = {{ ms: Number(pane.dataset.renderMs), units: Number(pane.dataset.units) }};
    if (typeof cleanup === "function") cleanup();
    return out;
  }},
}};
window.__gwReady = true;
</script></body></html>"""


def page_state(w: gw.GradWidget) -> dict:
    """The widget state as the browser sees it (buffers as base64 for the page to put back)."""
    state, paths, buffers = _remove_buffers(w.get_state())
    state["__buffers"] = [
        [path, base64.b64encode(bytes(buf)).decode()]
        for path, buf in zip(paths, buffers, strict=True)
    ]
    return state


def comm_open_bytes(w, keys: tuple[str, ...] | None = None) -> int:
    """JSON state plus binary buffers: what a comm_open for this widget carries (or the
    share of it that ``keys`` take)."""
    state = w.get_state()
    if keys is not None:
        state = {k: state[k] for k in keys}
    text, _, buffers = _remove_buffers(state)
    return len(json.dumps(text).encode()) + sum(len(bytes(b)) for b in buffers)


def graph_bytes(w) -> int:
    """The part of the payload that is this graph's data (node/module tables, DOT; packed)."""
    return comm_open_bytes(w, ("nodes", "modules", "dot", "view_modules"))


def dot_ms(source: str) -> float | None:
    if shutil.which("dot") is None:
        return None
    times = []
    for _ in range(1 if QUICK else 3):
        t0 = time.perf_counter()
        subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True, check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    from playwright.sync_api import sync_playwright

    rows, fails = [], []
    loader_bytes = comm_open_bytes(get_loader())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(**launch_options())
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        route_static(page, {"index.html": PAGE})
        page.goto(f"{ORIGIN}/index.html")
        page.wait_for_function("() => window.__gwReady === true", timeout=60_000)
        warm = gw.GradWidget(nn.Linear(2, 2), example_input=torch.randn(1, 2))
        page.evaluate("(s) => window.__gwBench.render(s)", page_state(warm))  # JIT warm-up
        for name, model, x, _ in models():
            w = gw.GradWidget(model, example_input=x)
            for view, depth in (("default", None), ("full", w.max_depth)):
                if view == "full":
                    w.depth = depth
                units = len(set(view_of(w.graph, w.depth, w.expanded).unit.values()))
                state = page_state(w)
                samples, error = [], None
                n = SAMPLES if units < 1000 else max(1, SAMPLES // 2)
                for _ in range(n):
                    res = page.evaluate("(s) => window.__gwBench.render(s)", state)
                    if "error" in res:
                        error = res["error"]
                        break
                    samples.append(res["ms"])
                browser_ms = statistics.median(samples) if samples else None
                rows.append(
                    (
                        name,
                        view,
                        len(w.graph),
                        units,
                        browser_ms,
                        dot_ms(w.dot),
                        comm_open_bytes(w),
                        graph_bytes(w),
                        error,
                    )
                )
                if error:
                    fails.append(f"{name} {view}: the browser showed an error: {error}")
                if (
                    name == "TransformerEncoder-24"
                    and view == "default"
                    and (browser_ms is None or browser_ms > BUDGET_24_DEFAULT_MS)
                ):
                    fails.append(
                        f"{name} default view took {browser_ms} ms "
                        f"(budget {BUDGET_24_DEFAULT_MS:.0f} ms)"
                    )
                if comm_open_bytes(w) > BUDGET_COMM_OPEN:
                    fails.append(
                        f"{name} {view}: a 2nd widget's comm_open is {comm_open_bytes(w)} B "
                        f"(budget {BUDGET_COMM_OPEN} B)"
                    )
            w.close()
        browser.close()

    print("## Graph widget rendering (headless Chromium, WASM Graphviz) vs system dot\n")
    print(
        "| model | view | graph nodes | boxes drawn | browser ms | dot -Tsvg ms "
        "| 1st widget KB (+ loader) | 2nd widget KB | of which graph data KB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, view, nodes, units, bms, dms, cb, gb, err in rows:
        b = f"{bms:.0f}" if bms is not None else f"error: {err}"
        d = f"{dms:.0f}" if dms is not None else "n/a"
        print(
            f"| {name} | {view} | {nodes} | {units} | {b} | {d} "
            f"| {(loader_bytes + cb) / 1000:.1f} | {cb / 1000:.1f} | {gb / 1000:.1f} |"
        )
    print(
        "\nThe first graph widget on a page also brings the loader widget"
        f" ({loader_bytes / 1000:.0f} KB, once per kernel: gzipped WASM Graphviz plus the"
        " front-end code and CSS); every"
        " later one sends only its stub and its packed graph data (node/module tables, DOT)."
        f" Samples per cell: {SAMPLES} (median). Budgets: TransformerEncoder-24 default view"
        f" <= {BUDGET_24_DEFAULT_MS:.0f} ms; every 2nd widget's comm_open"
        f" <= {BUDGET_COMM_OPEN / 1000:.0f} KB."
    )
    for f in fails:
        print(f"FAIL: {f}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
