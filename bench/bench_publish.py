"""publish(): what publishing a DDP job's gradients costs the job, 2 gloo ranks.

Run: ``.venv/bin/python bench/bench_publish.py`` (or ``make bench`` for every benchmark).

Job: 2 ranks on 127.0.0.1 (``torch.multiprocessing`` spawn, gloo, one thread each), each
training the tiny MLP 16->64->64->64->1 under DDP, batch 32, SGD; a step is ``zero_grad;
mse_loss(model(x), y).backward(); step`` plus ``pub.log(loss=loss)`` when published.

In each rank two identical DDP models alternate in blocks of ``BLOCK_STEPS`` steps (ABBA
order, many pairs): one published with ``gw.publish(model, logdir)`` at its defaults (rank 0
samples parameters at 5 Hz on its own clock and writes the log; rank 1 keeps only its
heartbeat; both hook the same forwards for the intermediates, reduced across the ranks
about once a second), one bare. Blocks are counted in steps, so both ranks switch together (DDP
steps in lockstep). Each block is timed with the process CPU time (``time.process_time``:
every thread, so the log writer thread and gloo's threads are counted) with the garbage
collector paused; the ratio is the median of the per-pair ratios. Also printed: the same
ratio of the training thread's CPU time alone, the writer thread's CPU as a share of the
published blocks' process CPU, and "counted": what publish's parts measured of themselves
(the parameter watcher, the reduced intermediates, the writer thread) as that share -- less
noisy than a ratio on a shared machine, but without the per-step ``log()`` call and hooks.
The process-wide optimizer step pre-hooks publish installs run on the bare model's steps
too (about a microsecond per step, a step here is ~1 ms), so the bare side carries that.

Budget: rank 0 within the local widget's 1.05x plus the collectives (those of the reduced
intermediates, ~1 Hz; the parameters need none): 1.05x is checked, collectives included.
Prints a markdown table; exits 1 when the budget is missed. Set ``BENCH_QUICK=1`` for fewer
pairs.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the gloo launcher the tests use

from _ddp import run_ranks  # noqa: E402

BUDGET = 1.05
BLOCK_STEPS = 500
QUICK = os.environ.get("BENCH_QUICK") == "1"
PAIRS = 4 if QUICK else 16


def _own_cpu(pub) -> float:
    """CPU seconds publish's samplers counted themselves (training thread)."""
    spent = pub.watcher.cpu_seconds if pub.watcher is not None else 0.0
    return spent + (pub.shared.cpu_seconds if pub.shared is not None else 0.0)


def _rank(rank: int, world_size: int, logdir: str, pairs: int) -> dict:
    import torch
    import torch.nn.functional as F
    from _models import mlp16
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import gradwidget as gw

    def mlp() -> nn.Module:
        return DDP(mlp16())

    torch.manual_seed(10 + rank)
    x, y = torch.randn(32, 16), torch.randn(32, 1)
    published, bare = mlp(), mlp()
    opts = {
        "pub": torch.optim.SGD(published.parameters(), lr=0.01),
        "bare": torch.optim.SGD(bare.parameters(), lr=0.01),
    }
    pub = gw.publish(published, logdir, job="bench")

    def block(which: str) -> float:
        model, opt = (published, opts["pub"]) if which == "pub" else (bare, opts["bare"])
        gc.collect()
        gc.disable()
        t0, th0 = time.process_time(), time.thread_time()
        for _ in range(BLOCK_STEPS):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            if which == "pub":
                pub.log(loss=loss)
        spent = time.process_time() - t0, time.thread_time() - th0
        gc.enable()
        return spent

    block("pub"), block("bare")  # warm-up (the graph is recorded here)
    samples0 = pub.watcher.samples if pub.watcher is not None else 0
    shared0 = pub.shared.samples if pub.shared is not None else 0
    writer = time.pthread_getcpuclockid(pub._pump._thread.ident)
    w0 = time.clock_gettime(writer)
    own0 = _own_cpu(pub)
    ratios, thread_ratios, pub_cpu, bare_cpu = [], [], [], []
    for i in range(pairs):
        order = ("pub", "bare") if i % 2 == 0 else ("bare", "pub")
        t = {w: block(w) for w in order}
        ratios.append(t["pub"][0] / t["bare"][0])
        thread_ratios.append(t["pub"][1] / t["bare"][1])
        pub_cpu.append(t["pub"][0])
        bare_cpu.append(t["bare"][0])
    writer_cpu = time.clock_gettime(writer) - w0
    own = _own_cpu(pub) - own0
    samples = (pub.watcher.samples if pub.watcher is not None else 0) - samples0
    shared = (pub.shared.samples if pub.shared is not None else 0) - shared0
    pub.close()
    size = pub.path.stat().st_size if pub.path is not None else 0
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "thread_ratio": statistics.median(thread_ratios),
        "writer_share": writer_cpu / sum(pub_cpu),
        "own_share": (own + writer_cpu) / sum(pub_cpu),
        "bare_ms": 1000 * statistics.median(bare_cpu) / BLOCK_STEPS,
        "pub_ms": 1000 * statistics.median(pub_cpu) / BLOCK_STEPS,
        "samples_per_1000": 1000 * samples / (pairs * BLOCK_STEPS),
        "shared_per_1000": 1000 * shared / (pairs * BLOCK_STEPS),
        "log_bytes": size,
        "steps": pairs * BLOCK_STEPS,
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as logdir:
        t0 = time.monotonic()
        results = run_ranks(_rank, logdir, PAIRS, world_size=2, timeout=900)
        wall = time.monotonic() - t0
    print("## publish(): job overhead, 2 gloo ranks, tiny MLP under DDP\n")
    print(
        f"{PAIRS} ABBA pairs of {BLOCK_STEPS}-step blocks per rank, process CPU time, "
        f"median of per-pair ratios ({wall:.0f} s in all)\n"
    )
    print(
        "| rank | writes | bare step | published step | ratio (process) "
        "| ratio (training thread) | writer thread | counted | parameter samples / 1000 steps "
        "| reduced intermediates / 1000 steps | log |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rank, r in enumerate(results):
        writes = "log + heartbeat" if rank == 0 else "heartbeat only"
        log = f"{r['log_bytes'] / 1024:.0f} KiB" if r["log_bytes"] else "-"
        print(
            f"| {rank} | {writes} | {r['bare_ms']:.3f} ms | {r['pub_ms']:.3f} ms | "
            f"{r['ratio']:.3f}x | {r['thread_ratio']:.3f}x | {100 * r['writer_share']:.2f} % "
            f"| {100 * r['own_share']:.2f} % "
            f"| {r['samples_per_1000']:.1f} | {r['shared_per_1000']:.1f} | {log} |"
        )
    print()
    print("per-pair ratios, rank 0:", " ".join(f"{v:.3f}" for v in results[0]["ratios"]))
    print("per-pair ratios, rank 1:", " ".join(f"{v:.3f}" for v in results[1]["ratios"]))
    if results[0]["ratio"] > BUDGET:
        print(f"FAIL: rank 0 overhead {results[0]['ratio']:.3f}x > budget {BUDGET}x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
