"""Two training runs' gradients side by side: per-node norms of each run's sampled steps.

A run of the Trainer (each starts from the same snapshot) numbers its optimizer steps from 1;
every sample published during it is kept here as its nodes' gradient norms at that step
(float32, from the update the widget sends anyway; at most ``size`` samples per run and
:data:`MAX_RUNS` runs: a run of a GPT-2's 1,500 nodes takes 12 KB per kept step). Comparing
two runs at one step gives each node's ``log10(‖g_a‖ / ‖g_b‖)``. The first and last step of
every run are always sampled, so two runs of the same length can always be compared at their
last step; ``watch(every=0)`` samples every step.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ._constants import STAT_COLUMNS
from ._wire import stats_columns

_NORM = STAT_COLUMNS.index("norm")
_NONFINITE = STAT_COLUMNS.index("nonfinite")

#: Runs whose gradients are kept (the oldest is dropped first).
MAX_RUNS = 8


class RunGrads:
    """Per run id: ``{run step: (node rows, float32 norms)}`` of its samples.

    Parameters
    ----------
    ids : list of str
        Node id of each row of the node table (what the updates' rows index).
    """

    def __init__(self, ids: list[str], size: int = 200):
        self.ids = ids
        self.size = size
        self._runs: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._base: dict[int, int] = {}
        self._lock = threading.Lock()  # runs train in a worker thread; compare() reads

    def add(self, run: int, step: int, update: bytes) -> None:
        """A sample (an :func:`~gradwidget._wire.encode_stats` update) of run ``run`` at
        global optimizer step ``step``; the run's first sample is its step 1."""
        rows, cols = stats_columns(update)
        norms = cols[:, _NORM].copy()
        norms[cols[:, _NONFINITE] > 0] = math.nan  # a NaN/Inf gradient has no norm to compare
        with self._lock:
            self._add(run, step, rows, norms)

    def _add(self, run: int, step: int, rows: np.ndarray, norms: np.ndarray) -> None:
        if run not in self._runs:
            self._runs[run] = {}
            self._base[run] = step - 1
            while len(self._runs) > MAX_RUNS:
                old = next(iter(self._runs))
                del self._runs[old], self._base[old]
        steps = self._runs[run]
        steps[step - self._base[run]] = (rows, norms)
        while len(steps) > self.size:
            del steps[next(iter(steps))]

    def runs(self) -> dict[int, list[int]]:
        """Run id -> its kept steps."""
        with self._lock:
            return {r: sorted(s) for r, s in self._runs.items()}

    def compare(self, run_a: int, run_b: int, step: int | None = None) -> tuple[int, dict]:
        """``(step, {node id: log10(‖g_a‖ / ‖g_b‖)})`` at ``step`` (None: the latest step
        both runs sampled); NaN where either norm is 0 or not finite."""
        with self._lock:
            return self._compare(run_a, run_b, step)

    def _compare(self, run_a: int, run_b: int, step: int | None) -> tuple[int, dict]:
        for r in (run_a, run_b):
            if r not in self._runs:
                known = ", ".join(map(str, self._runs)) or "none yet"
                raise ValueError(
                    f"No gradients of run {r!r} were kept (runs with gradients: {known}); "
                    "runs are kept while the widget watches (w.watch(), or a run of a widget "
                    "drawn from a module)."
                )
        a, b = self._runs[run_a], self._runs[run_b]
        common = sorted(set(a) & set(b))
        if step is None:
            if not common:
                raise ValueError(
                    f"Runs {run_a} and {run_b} have no sampled step in common; "
                    "watch(every=0) samples every step."
                )
            step = common[-1]
        if step not in a or step not in b:
            raise ValueError(
                f"Step {step!r} was not sampled in both runs {run_a} and {run_b}; "
                f"steps sampled in both: {common}."
            )
        (rows_a, na), (rows_b, nb) = a[step], b[step]
        other = dict(zip(rows_b.tolist(), nb.tolist(), strict=True))
        out: dict[str, float] = {}
        for r, x in zip(rows_a.tolist(), na.tolist(), strict=True):
            y = other.get(r)
            if y is None:
                continue
            ok = x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)
            out[self.ids[r]] = math.log10(x / y) if ok else math.nan
        return step, out
