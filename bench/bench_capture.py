"""Capture + DOT generation: gradwidget vs torchviz.make_dot on the same graphs.

Run: ``.venv/bin/python bench/bench_capture.py`` (or ``make bench`` for every benchmark).

For each graph both tools are timed in this process on the same loss tensor, in rounds
(torchviz, gradwidget default view, gradwidget full graph) whose order rotates, each
sample a ~20 ms batch of calls measured with process CPU time and the garbage collector
paused; a ratio is the median over rounds of gradwidget / torchviz. Budget: gradwidget (post-hoc
``capture()`` plus DOT text, for the default collapsed view and for the full graph) at
most 1.0x ``torchviz.make_dot(...).source``, although gradwidget also reads every op's
output shape/dtype and the shapes/bytes of every tensor saved for backward. The
``dot`` columns time the system Graphviz layout (``dot -Tsvg``, wall clock) of the
default view vs the full graph of a ``record()``-ed forward pass, which is what the
widget draws. Prints a markdown table; exits 1 when a ratio is over budget.
Set ``BENCH_QUICK=1`` for fewer repetitions.
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from _models import ResNet, encoder

import gradwidget as gw

try:
    import torchviz
except ImportError:  # pragma: no cover - dev dependency
    torchviz = None

BUDGET = 1.0
QUICK = os.environ.get("BENCH_QUICK") == "1"


def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    return model, lambda: F.cross_entropy(model(x), y)


def resnet():
    torch.manual_seed(0)
    model = ResNet()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    return model, lambda: F.cross_entropy(model(x), y)


def transformer(layers: int):
    def build():
        torch.manual_seed(0)
        model = encoder(layers)
        x = torch.randn(4, 16, 64)
        return model, lambda: model(x).pow(2).mean()

    return build


def chain(n: int = 100_000):
    x = torch.randn(4, requires_grad=True)

    def forward():
        y = x
        for _ in range(n):
            y = y * 1.0001
        return y.sum()

    return None, forward


CASES = [
    ("MLP (4 Linear)", mlp),
    ("ResNet-14 (BatchNorm)", resnet),
    ("TransformerEncoder x6", transformer(6)),
    ("TransformerEncoder x24", transformer(24)),
    ("chain of 100,000 ops", chain),
]


# ---- timing -----------------------------------------------------------------------------
def cpu_time(fn, number: int = 1) -> float:
    """Process CPU seconds per call over ``number`` calls, garbage collector paused."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        for _ in range(number):
            fn()
        return (time.process_time() - t0) / number
    finally:
        gc.enable()


def rounds(fns: list, reps: int) -> list[list[float]]:
    """Time each of ``fns`` ``reps`` times, rotating which goes first each round.

    Each sample is a batch of calls lasting about 20 ms, so timer resolution and the
    cold start after ``gc.collect()`` do not dominate small graphs.
    """
    single = max(max(cpu_time(f) for f in fns), 1e-6)
    number = max(1, int(0.02 / single))
    times: list[list[float]] = [[] for _ in fns]
    for r in range(reps):
        for k in range(len(fns)):
            i = (r + k) % len(fns)
            times[i].append(cpu_time(fns[i], number))
    return times


def dot_layout(source: str) -> float:
    """Wall seconds of ``dot -Tsvg`` on ``source``."""
    t0 = time.perf_counter()
    subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True, check=True)
    return time.perf_counter() - t0


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def run_case(title: str, build) -> tuple[list[str], bool]:
    model, forward = build()
    loss = forward()
    params = dict(model.named_parameters()) if model is not None else None
    big = len(gw.capture(loss)) > 10_000
    reps = 3 if big else (5 if QUICK else 15)

    def gw_default() -> str:
        return gw.capture(loss, module=model).to_dot().source

    def gw_full() -> str:
        g = gw.capture(loss, module=model)
        return g.to_dot(depth=g.max_depth).source

    def tv() -> str:
        return torchviz.make_dot(loss, params=params).source

    graph = gw.capture(loss, module=model)
    n_ops, n_leaves = len(graph.of_kind("op")), len(graph.of_kind("leaf"))
    tv_cell, ratio_cells, ok = "n/a (torchviz missing)", ["n/a", "n/a"], True
    try:
        if torchviz is None:
            raise ImportError
        tv()
    except RecursionError:
        tv_cell = "RecursionError"
        t_default, t_full = rounds([gw_default, gw_full], reps)
    except ImportError:
        t_default, t_full = rounds([gw_default, gw_full], reps)
    else:
        t_tv, t_default, t_full = rounds([tv, gw_default, gw_full], reps)
        ratios = [
            statistics.median(g / t for g, t in zip(ts, t_tv, strict=True))
            for ts in (t_default, t_full)
        ]
        tv_cell = ms(statistics.median(t_tv))
        ok = max(ratios) <= BUDGET
        ratio_cells = [f"{r:.2f}x" + (" OVER" if r > BUDGET else "") for r in ratios]

    # Layout of what the widget draws: a recorded graph, default (collapsed) vs full view.
    layout = ["n/a", "n/a"]
    if shutil.which("dot") and not big:
        with gw.record(model) as rec:
            rec_loss = forward()
        rg = rec.graph_of(rec_loss)
        default_dot = rg.to_dot()
        full_dot = rg.to_dot(depth=rg.max_depth)
        n_default = rg.visible_count(rg.open_modules())
        layout = [
            f"{ms(dot_layout(default_dot.source))} ({n_default} boxes)",
            f"{ms(dot_layout(full_dot.source))} ({len(rg)} nodes)",
        ]
    elif big:
        layout = ["skipped (no modules: default = full)", "skipped (too big for dot)"]
    row = [
        title,
        f"{n_ops:,} / {n_leaves:,}",
        tv_cell,
        ms(statistics.median(t_default)),
        ms(statistics.median(t_full)),
        *ratio_cells,
        *layout,
    ]
    return row, ok


def main() -> int:
    torch.set_num_threads(1)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))  # torchviz's default stack
    header = [
        "graph",
        "ops / leaves",
        "torchviz ms",
        "gw default ms",
        "gw full ms",
        "ratio default",
        "ratio full",
        "dot layout default ms",
        "dot layout full ms",
    ]
    print(f"## capture + DOT: gradwidget vs torchviz (budget <= {BUDGET:.1f}x, CPU time)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    all_ok = True
    for title, build in CASES:
        row, ok = run_case(title, build)
        all_ok &= ok
        print("| " + " | ".join(row) + " |", flush=True)
    print(
        "\nms = median process CPU time of capture() + DOT text; ratio = median over "
        "rotating rounds of gradwidget / torchviz.make_dot(...).source; dot layout = "
        "wall time of `dot -Tsvg` on a record()-ed graph."
    )
    if not all_ok:
        print(f"\nFAIL: gradwidget over {BUDGET:.1f}x torchviz's time.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
