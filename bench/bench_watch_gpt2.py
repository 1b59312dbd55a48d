"""Live gradients on a Hugging Face GPT-2: the cost of watching it, the rate of each tier.

Run: ``.venv/bin/python bench/bench_watch_gpt2.py`` (``BENCH_QUICK=1`` for shorter blocks).

Model: ``GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=1000,
n_positions=64))`` built from its config (bench/_models.py; nothing is downloaded), batch 8x64
random tokens, AdamW, ``torch.set_num_threads(1)``; a step is ``zero_grad; model(x,
labels=y).loss.backward(); step``. The graph is recorded once with ``gw.record(model)`` and
drawn by a GradWidget; ``w.watch(model)`` uses the default settings.

Variants alternate with the bare loop in paired blocks of about ``BLOCK`` seconds of steps
each (ABBA order, process CPU time per block, garbage collector paused); the ratio is the
median of the per-pair ratios. During the watched blocks the two tiers' achieved rates are
counted (samples / wall time of the watched blocks). Also printed: each tier's CPU per
sample, next to the one-pass floor (a sum over the 0.93 M gradient floats in one flat
buffer) and the naive per-tensor statistics (norm, min/max, 32-bin ``histc`` per tensor).

Anchors, on the same model and loop: TensorBoard ``add_histogram`` of every gradient every
10 steps, and a ``wandb.watch``-style per-parameter ``register_hook`` histogram every 100
calls (bench/_anchors.py). Budgets: watched <= 1.03x with the leaf tier >= 4 Hz and the
intermediate tier >= 1 Hz; exits 1 when one is missed.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time

import torch
from _anchors import tensorboard_histograms, wandb_style_hooks
from _models import gpt2, gpt2_loss

import gradwidget as gw

QUICK = os.environ.get("BENCH_QUICK") == "1"
BLOCK = 3.0 if QUICK else 8.0  # seconds of steps per block
PAIRS = 2 if QUICK else 6
BUDGET, LEAF_HZ, OP_HZ = 1.03, 4.0, 1.0


class Loop:
    def __init__(self):
        self.model, self.x, self.y = gpt2()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.wall = 0.0

    def run(self, n: int) -> float:
        """CPU seconds per step over ``n`` steps."""
        gc.collect()
        gc.disable()
        try:
            w0, t0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                self.opt.zero_grad()
                gpt2_loss(self.model, self.x, self.y).backward()
                self.opt.step()
            self.wall += time.perf_counter() - w0
            return (time.process_time() - t0) / n
        finally:
            gc.enable()


def paired(variant: Loop, bare: Loop, n: int, pairs: int) -> tuple[list[float], float, float]:
    rs, tv, tb = [], [], []
    for i in range(pairs):
        if i % 2:
            b, v = bare.run(n), variant.run(n)
        else:
            v, b = variant.run(n), bare.run(n)
        rs.append(v / b)
        tv.append(v)
        tb.append(b)
    return rs, statistics.median(tv), statistics.median(tb)


def med_ms(fn, k: int = 30) -> float:
    ts = []
    for _ in range(k):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return statistics.median(ts) * 1e3


def floors(loop: Loop) -> tuple[float, float]:
    """(one pass over the gradients in one flat buffer, naive per-tensor stats) in ms."""
    grads = [p.grad for p in loop.model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])

    def naive():
        for g in grads:
            torch.linalg.vector_norm(g)
            lo, hi = torch.aminmax(g)
            torch.histc(g, 32, float(lo), float(hi))

    return med_ms(flat.sum), med_ms(naive, 10)


def main() -> int:
    torch.set_num_threads(1)
    bare = Loop()
    bare.run(3)
    n = max(4, round(BLOCK / bare.run(6)))

    watched = Loop()
    with gw.record(watched.model) as rec:
        graph = rec.graph_of(gpt2_loss(watched.model, watched.x, watched.y))
    w = gw.GradWidget(graph)
    wt = w.watch(watched.model)
    watched.run(3)  # the forced first sample, warm-up
    watched.wall = 0.0
    l0, o0, lc0, oc0 = wt.leaf_samples, wt.op_samples, wt._leaf.cpu_seconds, wt._budget.cpu_seconds
    rs, tv, tb = paired(watched, bare, n, PAIRS)
    leaf_n, op_n = wt.leaf_samples - l0, wt.op_samples - o0
    leaf_hz, op_hz = leaf_n / watched.wall, op_n / watched.wall
    leaf_ms = (wt._leaf.cpu_seconds - lc0) / max(leaf_n, 1) * 1e3
    op_ms = (wt._budget.cpu_seconds - oc0) / max(op_n, 1) * 1e3
    med = statistics.median(rs)
    counted = (wt.cpu_seconds - lc0 - oc0) / (tv * n * PAIRS)
    ok = med <= BUDGET and leaf_hz >= LEAF_HZ and op_hz >= OP_HZ
    one_pass, naive = floors(watched)
    w.unwatch()

    print(f"## Live gradients on GPT-2 ({len(graph)} nodes, 52 parameter tensors, 0.93 M floats)\n")
    print(
        f"{PAIRS} pairs of {n}-step blocks (~{BLOCK:g} s each); bare step {tb * 1e3:.0f} ms CPU.\n"
    )
    print(
        "| variant | bare ms/step | variant ms/step | ratio (median) | min / max | rates | budget |"
    )
    print("|---|---:|---:|---:|---|---|---|")
    print(
        f"| `w.watch(model)`, default settings | {tb * 1e3:.1f} | {tv * 1e3:.1f} | {med:.3f}x "
        f"| {min(rs):.3f} / {max(rs):.3f} | grads {leaf_hz:.1f} Hz · intermediates "
        f"{op_hz:.1f} Hz | {'ok' if ok else 'OVER'} |",
        flush=True,
    )
    for title, make, k in (
        ("TensorBoard `add_histogram` of every grad, every 10 steps", tensorboard_histograms, 10),
        ("wandb.watch-style `register_hook` histogram, every 100 calls", wandb_style_hooks, 100),
    ):
        loop = Loop()
        anchor = make(loop.model, k)
        loop.run(2)
        ars, atv, atb = paired(loop, bare, max(n, 2 * k if k <= 10 else n), PAIRS)
        anchor.remove()
        print(
            f"| {title} | {atb * 1e3:.1f} | {atv * 1e3:.1f} | {statistics.median(ars):.3f}x "
            f"| {min(ars):.3f} / {max(ars):.3f} | {anchor.events} histograms | - |",
            flush=True,
        )
    print(
        f"\nPer sample, CPU: leaf tier {leaf_ms:.2f} ms (52 parameter gradients: norms at "
        f"every sample, full statistics at most once a second), intermediate tier {op_ms:.2f} ms "
        f"({len(graph)} nodes: hooks and norms); one pass over the 0.93 M floats "
        f"{one_pass:.2f} ms; naive per-tensor norm + min/max + histc {naive:.1f} ms. "
        f"The sampling the watcher counted: {counted:.1%} of the watched blocks' CPU."
    )
    if not ok:
        print("\nFAIL: a budget was missed (OVER above).")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
