"""The last samples a widget showed, kept compact so memory stays bounded.

Each kept sample is its step, its wall-clock time and, per node it sampled, the float32
statistic columns of the wire (:data:`gradwidget._constants.STAT_COLUMNS`: norm, mean, std,
min, max, absmean, nonfinite, numel, update_ratio; NaN where that sample did not compute
one), copied out of the update the widget sends anyway (:func:`gradwidget._wire.stats_columns`:
no per-node work). Histograms and small tensors' values are not kept (the latest sample has
them). That is ``4 * (len(STAT_COLUMNS) + 1)`` = 40 bytes per sampled node and sample: 200
samples of a GPT-2's ~1,500 watched nodes take ~12 MB.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from ._constants import STAT_COLUMNS
from ._wire import stats_columns

#: Samples a widget keeps by default (``w.watch(history=...)``).
DEFAULT_HISTORY = 200


class History:
    """A ring of the last ``size`` samples (see the module docstring).

    Parameters
    ----------
    ids : list of str
        Node id of each row of the node table (what the updates' rows index).
    size : int
    """

    def __init__(self, ids: list[str], size: int = DEFAULT_HISTORY):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"history must be a number of samples >= 1, got {size!r}.")
        self.ids = ids
        self.size = size
        self._items: collections.deque[tuple[int, float, np.ndarray, np.ndarray]] = (
            collections.deque(maxlen=size)
        )

    def add(self, step: int, when: float, update: bytes) -> None:
        """Keep one sample: an :func:`~gradwidget._wire.encode_stats` update."""
        rows, cols = stats_columns(update)
        self._items.append((int(step), float(when), rows, cols))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def last_step(self) -> int | None:
        """Step of the latest kept sample (None before the first)."""
        return self._items[-1][0] if self._items else None

    @property
    def nbytes(self) -> int:
        """Bytes of the kept arrays."""
        return sum(r.nbytes + c.nbytes for _, _, r, c in self._items)

    def items(self) -> list[tuple[int, float, dict[str, dict[str, float]]]]:
        """``(step, time, stats)`` of each kept sample, oldest first; ``stats`` by node id
        with the :data:`STAT_COLUMNS` as floats (``nonfinite`` and ``numel`` as ints)."""
        out = []
        for step, when, rows, cols in self._items:
            stats: dict[str, dict[str, float]] = {}
            for r, vals in zip(rows.tolist(), cols.tolist(), strict=True):
                s = dict(zip(STAT_COLUMNS, vals, strict=True))
                for key in ("nonfinite", "numel"):  # counts (float32 on the wire and here)
                    s[key] = int(s[key]) if math.isfinite(s[key]) else 0
                stats[self.ids[r]] = s
            out.append((step, when, stats))
        return out
