"""Run every benchmark: ``bench/bench_*.py``, one after the other, and check their budgets.

Usage::

    .venv/bin/python bench/run.py            # all of them (this is `make bench`)
    .venv/bin/python bench/run.py capture    # only scripts whose name contains "capture"
    BENCH_QUICK=1 .venv/bin/python bench/run.py   # fewer repetitions (a smoke run)

Convention for a benchmark script ``bench/bench_<topic>.py``:

* It is a standalone program run as ``python bench/bench_<topic>.py`` from the repository
  root, with the same interpreter as this runner, one script at a time (timings are not
  disturbed by another benchmark).
* Its module docstring says what is measured, how, and the budget.
* It prints its results to stdout as one or more markdown tables (a ``##`` heading per
  table), ready to paste into the README, and measures ratios against a baseline in the
  same process (alternating order, medians, process CPU time where single-threaded),
  because these machines are noisy.
* Exit status: 0 when every budget is met, 1 when a budget is missed (print a line starting
  with ``FAIL:`` saying which), anything else when it crashed.
* It may honour ``BENCH_QUICK=1`` (fewer repetitions) and must keep a full run within a
  few minutes.

This runner prints each script's output as it comes, then a summary, and exits non-zero if
any script missed a budget or crashed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def scripts(patterns: list[str]) -> list[Path]:
    """``bench_*.py`` files, sorted, keeping those whose name contains any pattern."""
    found = sorted(BENCH_DIR.glob("bench_*.py"))
    if patterns:
        found = [p for p in found if any(pat in p.name for pat in patterns)]
    return found


def main(argv: list[str]) -> int:
    todo = scripts(argv)
    if not todo:
        print(f"No bench/bench_*.py script matches {argv}.", file=sys.stderr)
        return 2
    results: list[tuple[str, int, float]] = []
    for path in todo:
        print(f"\n# {path.name}\n", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(path)], cwd=ROOT)
        results.append((path.name, code, time.perf_counter() - t0))
    print("\n# Summary\n")
    print("| benchmark | result | wall s |")
    print("|---|---|---|")
    for name, code, secs in results:
        verdict = {0: "ok", 1: "MISSED BUDGET"}.get(code, f"CRASHED (exit {code})")
        print(f"| {name} | {verdict} | {secs:.0f} |")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
