"""Live gradients: the cost of watching a training loop, next to TensorBoard and livelossplot.

Run: ``.venv/bin/python bench/bench_watch.py`` (or ``make bench`` for every benchmark).

Loop: the tiny MLP 16->64->64->64->1, batch 32, SGD, ``torch.set_num_threads(1)``; one step
is ``zero_grad; mse_loss(model(x), y).backward(); step``. Each variant is timed against the
bare loop in the same process with process CPU time and the garbage collector paused.

* ``gradwidget watch``: ``GradWidget(model).watch()`` with default settings (every
  parameter and every intermediate, sampled every 200 ms -- or further apart when a
  sample would cost more than 1.5% of the time between samples -- stats reduced on
  device, encoded with ``_wire.encode_stats`` and set on the synced trait). Budget:
  <= 1.05x. The watched loop and the bare loop alternate in blocks of about 0.75 s of
  steps each (ABBA order, many pairs, process CPU time per block); the ratio is the
  median of the per-pair ratios, so load from other processes hits both sides of a pair
  alike. The watcher stays attached across blocks and its throttle is wall-clock based,
  so while the bare block runs its next sample falls due: every watched block starts
  with a sample on its first step, exactly like the forced first-step sample of a fresh
  run, and then samples on the watcher's own clock. The samples per 1000 steps of the
  watched blocks are printed next to those of a default watched loop running alone
  (measured in the same run); the block start makes the former slightly higher (about
  half a sample per block), i.e. the measurement errs against the watcher. Also
  printed: the CPU the watcher counted itself.
* The references alternate with the bare loop in longer pairs (median of the ratios).
* TensorBoard ``add_histogram`` of every parameter's grad every 10 steps and every step
  (written to a temp dir), and livelossplot (matplotlib output) sending every 10 steps:
  reference figures, no budget.

Also printed: bytes per stats update (tiny MLP and a 500-node graph) and, when Chromium and
Playwright are available, the per-update restyle time of a 500-node graph in headless
Chromium (goal <= 16 ms), measured with ``performance.now()`` by the real front-end bundle
on a static page (real WASM Graphviz layout, the kernel replaced by a stub model that
replays real encoded updates). Prints markdown tables; exits 1 when a budget is missed.
Set ``BENCH_QUICK=1`` for fewer repetitions.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from _browser import ORIGIN, STATIC, launch_options, route_static
from _models import mlp16

import gradwidget as gw
import gradwidget._constants
from gradwidget._watch import DEFAULT_EVERY, DEFAULT_MAX_OVERHEAD

BUDGET = 1.05
RESTYLE_GOAL_MS = 16.0
#: CPU seconds of steps per block when the watched and bare loops alternate.
BLOCK_SECONDS = 0.75
QUICK = os.environ.get("BENCH_QUICK") == "1"


def tiny_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = mlp16()
    return model, torch.randn(32, 16), torch.randn(32, 1)


# ---- loops --------------------------------------------------------------------------------
class Loop:
    """One training setup; ``run(n)`` returns CPU seconds per step."""

    def __init__(self, after_step=None, setup=None):
        self.model, self.x, self.y = tiny_mlp()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.after_step = after_step
        self.step_no = 0
        if setup is not None:
            setup(self)

    def run(self, n: int, collect: bool = True) -> float:
        model, x, y, opt, after = self.model, self.x, self.y, self.opt, self.after_step
        if collect:
            gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.process_time()
            for _ in range(n):
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                opt.step()
                if after is not None:
                    after(self, loss)
                self.step_no += 1
            return (time.process_time() - t0) / n
        finally:
            if enabled:
                gc.enable()


def watched_setup(
    loop: Loop, every: float = DEFAULT_EVERY, max_overhead: float = DEFAULT_MAX_OVERHEAD
) -> None:
    loop.widget = gw.GradWidget(loop.model, example_input=loop.x)
    loop.widget.watch(every=every, max_overhead=max_overhead)


def samples_per_1000(loop: Loop) -> float:
    return 1000 * loop.widget.watcher.samples / max(loop.step_no, 1)


def tensorboard_setup(loop: Loop) -> None:
    from torch.utils.tensorboard import SummaryWriter

    loop.tmp = tempfile.TemporaryDirectory()
    loop.writer = SummaryWriter(loop.tmp.name)


def tensorboard_every(k: int):
    def after(loop: Loop, loss) -> None:
        if loop.step_no % k == 0:
            for name, p in loop.model.named_parameters():
                loop.writer.add_histogram(name, p.grad, loop.step_no)

    return after


def livelossplot_setup(loop: Loop) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    from livelossplot import PlotLosses
    from livelossplot.outputs import MatplotlibPlot

    loop.plot = PlotLosses(outputs=[MatplotlibPlot()], mode="script")


def livelossplot_every(k: int):
    def after(loop: Loop, loss) -> None:
        loop.plot.update({"loss": loss.item()})
        if loop.step_no % k == 0:
            with contextlib.redirect_stdout(io.StringIO()):
                loop.plot.send()
            import matplotlib.pyplot as plt

            plt.close("all")

    return after


def paired_blocks(variant: Loop, bare: Loop, n: int, pairs: int):
    """Per-pair CPU time ratios with the two loops alternating in blocks of ``n`` steps.

    ABBA order (the first block of each pair alternates), the garbage collector collected
    before and paused during every block. Returns (ratios, variant s/step, bare s/step).
    """
    rs, tv, tb = [], [], []
    for i in range(pairs):
        if i % 2:
            b = bare.run(n)
            v = variant.run(n)
        else:
            v = variant.run(n)
            b = bare.run(n)
        rs.append(v / b)
        tv.append(v)
        tb.append(b)
    return rs, tv, tb


def quartiles(xs: list[float]) -> str:
    """min / quartiles / max of the ratios, for the spread column."""
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return f"{min(xs):.3f} / {q1:.3f} / {q3:.3f} / {max(xs):.3f}"


# ---- bytes per update ------------------------------------------------------------------------
def chain_graph(n_ops: int, seed: int = 0):
    """A ~n_ops-node graph: a chain of mul/tanh on a 4-vector with one weight per step."""
    torch.manual_seed(seed)
    x = torch.randn(4, requires_grad=True)
    weights = {f"w{i}": torch.randn(4, requires_grad=True) for i in range(n_ops // 3)}
    h = x
    for wt in weights.values():
        h = (h * wt).tanh()
    loss = h.sum()
    return loss, {"x": x, **weights}


def update_bytes() -> dict[str, tuple[int, int]]:
    loop = Loop(setup=watched_setup)
    loop.widget.watch(every=0)
    loop.run(2)
    tiny = (len(loop.widget.grad_stats), len(loop.widget.stats()))
    loop.widget.unwatch()
    loss, params = chain_graph(500)
    w = gw.GradWidget(gw.capture(loss, params=params))
    w.watch(loss)
    loss.backward()
    big = (len(w.grad_stats), len(w.stats()))
    w.unwatch()
    return {"tiny MLP": tiny, f"chain ({len(w.graph)} nodes)": big}


# ---- browser restyle ---------------------------------------------------------------------------
# The page imports the front-end itself (not through the loader widget), so it hands over the
# shared constants the loader would.
CONSTANTS = json.dumps(gradwidget._constants.frontend())
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/static/widget.css"></head><body><div id="root"></div>
<script type="module">
import widget, { setConstants } from "/static/widget.js";
import loader from "/static/loader.js";
setConstants(__CONSTANTS__);
const state = await (await fetch("/state.json")).json();
const updates = await (await fetch("/updates.bin")).arrayBuffer();
const sizes = await (await fetch("/sizes.json")).json();
const gz = await (await fetch("/static/viz.mjs.gz")).arrayBuffer();
function stubModel(values) {
  const handlers = new Map();
  return {
    get: (k) => values[k],
    set(k, v) { values[k] = v; for (const fn of handlers.get("change:" + k) || []) fn(); },
    on(ev, fn) { if (!handlers.has(ev)) handlers.set(ev, new Set()); handlers.get(ev).add(fn); },
    off(ev, fn) { handlers.get(ev)?.delete(fn); },
    save_changes() {}, send() {},
  };
}
const loaderModel = stubModel({ digest: "bench", viz_gz: new DataView(gz) });
const exports = loader.initialize({ model: loaderModel });
const model = stubModel({ ...state, grad_stats: new DataView(new ArrayBuffer(0)) });
const host = { getWidget: async () => ({ exports }) };
const el = document.getElementById("root");
widget.render({ model, el, host });
window.__bench = { model, updates, sizes };
</script></body></html>
""".replace("__CONSTANTS__", CONSTANTS)

MEASURE_JS = """
async () => {
  const { model, updates, sizes } = window.__bench;
  const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
  const legend = () => document.querySelector(".gw-legend");
  const times = [];
  let off = 0;
  for (const size of sizes) {
    const view = new DataView(updates, off, size);
    off += size;
    const t0 = performance.now();
    model.set("grad_stats", view);
    await frame();
    await frame();
    times.push({ total: performance.now() - t0, restyle: Number(legend().dataset.restyleMs) });
  }
  const nodes = [...document.querySelectorAll("svg g.node")];
  const painted = nodes.filter((g) => g.querySelector("polygon, path, ellipse")?.style.fill).length;
  return { times, shapes: nodes.length, painted };
}
"""


def browser_restyle(n_updates: int) -> tuple[list[float], int, int] | str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: playwright not installed"
    try:
        launch = launch_options()
    except FileNotFoundError as e:
        return f"skipped: {e}"
    if not (STATIC / "widget.js").exists():
        return "skipped: front-end not built (cd js && npm run build)"

    loss, params = chain_graph(500)
    w = gw.GradWidget(gw.capture(loss, params=params))
    state = {k: getattr(w, k) for k in ("dot", "view_modules", "view_error", "nodes")}
    state.update(modules=w.modules, saved_bytes=w.saved_bytes, selected="", expanded=[], depth=None)
    state["loader"] = "IPY_MODEL_bench"
    blobs = []
    for i in range(n_updates):
        loss, _ = chain_graph(500, seed=i + 1)  # same structure, new values: colors move
        w.watch(loss)
        loss.backward()
        blobs.append(bytes(w.grad_stats))
    w.unwatch()
    files = {
        "index.html": PAGE,
        "state.json": json.dumps(state),
        "updates.bin": b"".join(blobs),
        "sizes.json": json.dumps([len(b) for b in blobs]),
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(**launch)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            route_static(page, files)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{ORIGIN}/index.html")
            page.wait_for_selector("svg g.node", timeout=60_000)
            res = page.evaluate(MEASURE_JS)
            if errors:
                return "failed: " + "; ".join(errors)
        finally:
            browser.close()
    restyle = [t["restyle"] for t in res["times"]][1:]  # first: cold (JIT)
    return restyle, res["shapes"], res["painted"], len(w.graph)


# ---- main ----------------------------------------------------------------------------------
def main() -> int:
    torch.set_num_threads(1)
    pairs = 3 if QUICK else 7
    steps = 1000 if QUICK else 2000
    watch_pairs = 10 if QUICK else 60
    bare = Loop()
    bare.run(300)  # warm-up
    block = max(200, round(BLOCK_SECONDS / bare.run(500)))

    # The sampling rate watch() with default settings has on a loop running alone.
    alone = Loop(setup=watched_setup)
    alone.run(3000 if QUICK else 8000)
    rate_alone = samples_per_1000(alone)
    alone.widget.unwatch()

    print(f"## Live gradients: cost of watching the tiny MLP (budget <= {BUDGET:.2f}x, CPU time)\n")
    header = ["variant", "bare us/step", "variant us/step", "ratio (median)", "spread", "budget"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))

    # Budgeted: watch() with default settings, blocks of ~BLOCK_SECONDS alternating with bare.
    watched = Loop(setup=watched_setup)
    assert watched.widget.watcher.every == DEFAULT_EVERY
    assert watched.widget.watcher.max_overhead == DEFAULT_MAX_OVERHEAD
    watched.run(50)  # warm-up (includes the first, forced sample)
    wt = watched.widget.watcher
    s0, n0, c0 = wt.samples, watched.step_no, wt.cpu_seconds
    rs, tv, tb = paired_blocks(watched, bare, block, watch_pairs)
    med = statistics.median(rs)
    ok = med <= BUDGET
    print(
        f"| gradwidget `w.watch()`, default settings (every={DEFAULT_EVERY:g} s, "
        f"max_overhead={DEFAULT_MAX_OVERHEAD:g}), every param + intermediate; "
        f"{watch_pairs} pairs of {block}-step blocks "
        f"| {statistics.median(tb) * 1e6:.0f} | {statistics.median(tv) * 1e6:.0f} "
        f"| {med:.3f}x | {quartiles(rs)} | {'ok' if ok else 'OVER'} |",
        flush=True,
    )
    samples, wsteps = wt.samples - s0, watched.step_no - n0
    watched_cpu = sum(tv) * block
    print(
        f"\n(above: spread = min / q1 / q3 / max of the per-pair ratios; "
        f"{1000 * samples / wsteps:.1f} samples per 1000 watched steps "
        f"({samples / watch_pairs:.1f} per block, the first step of each block included), "
        f"vs {rate_alone:.1f} for the default watch() of a loop running alone; "
        f"{len(watched.widget.stats())} nodes per sample, "
        f"{(wt.cpu_seconds - c0) / max(samples, 1) * 1e3:.2f} ms CPU per sample as counted "
        f"by the watcher = {(wt.cpu_seconds - c0) / watched_cpu:.1%} of the watched "
        "blocks' CPU time)\n",
        flush=True,
    )
    watched.widget.unwatch()

    references = [
        (
            "TensorBoard add_histogram, every 10 steps",
            Loop(tensorboard_every(10), tensorboard_setup),
            steps // 2,
        ),
        (
            "TensorBoard add_histogram, every step",
            Loop(tensorboard_every(1), tensorboard_setup),
            60,
        ),
        (
            "livelossplot send every 10 steps",
            Loop(livelossplot_every(10), livelossplot_setup),
            60,
        ),
    ]
    for title, loop, n in references:
        loop.run(min(n, 50))  # warm-up
        rs, tb, tv = [], [], []
        for i in range(pairs):
            if i % 2 == 0:
                v, b = loop.run(n), bare.run(steps)
            else:
                b, v = bare.run(steps), loop.run(n)
            rs.append(v / b)
            tb.append(b)
            tv.append(v)
        print(
            f"| {title} | {statistics.median(tb) * 1e6:.0f} | {statistics.median(tv) * 1e6:.0f} "
            f"| {statistics.median(rs):.3f}x | {quartiles(rs)} | - |",
            flush=True,
        )

    print("\n## Bytes per stats update (_wire.encode_stats)\n")
    print("| graph | nodes with stats | bytes per update |")
    print("|---|---|---|")
    for name, (nbytes, nodes) in update_bytes().items():
        print(f"| {name} | {nodes} | {nbytes:,} |")

    print(f"\n## Browser restyle per update, 500-node graph (goal <= {RESTYLE_GOAL_MS:.0f} ms)\n")
    res = browser_restyle(8 if QUICK else 30)
    if isinstance(res, str):
        print(res)
    else:
        times, shapes, painted, nodes = res
        med, worst = statistics.median(times), max(times)
        good = med <= RESTYLE_GOAL_MS and painted > 0
        ok &= good
        print("| graph nodes | SVG nodes | colored | updates | median ms | max ms | goal |")
        print("|---|---|---|---|---|---|---|")
        print(
            f"| {nodes} | {shapes} | {painted} | {len(times)} | {med:.2f} | {worst:.2f} | "
            f"{'ok' if good else 'OVER' if painted else 'FAILED: nothing colored'} |"
        )
        print(
            "\nms = performance.now() around building the style map and ctx.setNodeStyles "
            "(decode excluded; it runs on message arrival), per update after the first."
        )
    if not ok:
        print("\nFAIL: a budget was missed (see OVER / FAILED above).")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
