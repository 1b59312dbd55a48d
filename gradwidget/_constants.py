"""Constants that the Python side and the browser share: written once, here.

The loader widget sends :func:`frontend` to the page in its state, so the front-end reads
these values instead of repeating them (see ``js/src/shared.js``). This module imports nothing
of the package: every layer may use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The esbuild output (``js/`` builds into it; not committed, shipped in the wheel).
STATIC = Path(__file__).parent / "static"

#: Histogram bins per gradient tensor (statistics and their wire format).
HIST_BINS = 32
#: Per-node float32 columns of a stats update on the wire, in this order (then HIST_BINS counts).
#: A statistic a sample did not compute (an intermediate's mean at the norm-only level, the
#: update ratio of a node that is not a parameter) is NaN.
STAT_COLUMNS = (
    "norm",
    "mean",
    "std",
    "min",
    "max",
    "absmean",
    "nonfinite",
    "numel",
    "update_ratio",
)
#: Views with more visible boxes than this are not laid out (the tab would freeze).
MAX_VISIBLE_NODES = 20_000
#: Views with more boxes than this are laid out in a Web Worker, with a "laying out" status.
BIG_VIEW = 250
#: Learning-rate schedules: name -> the short label the schedule menu shows.
SCHEDULE_LABELS = {
    "constant": "constant",
    "step": "step decay",
    "exponential": "exponential",
    "cosine": "cosine annealing",
    "onecycle": "one-cycle",
}


def frontend() -> dict[str, Any]:
    """The constants the browser needs, as JSON-ready values."""
    return {
        "hist_bins": HIST_BINS,
        "stat_columns": list(STAT_COLUMNS),
        "max_units": MAX_VISIBLE_NODES,
        "big_view": BIG_VIEW,
        "schedule_labels": dict(SCHEDULE_LABELS),
    }
