"""The last samples a watcher published, kept compact so memory stays bounded.

Each kept sample is its step, its wall-clock time and, per node it sampled, the float32
statistic columns of the wire (:data:`gradwidget._constants.STAT_COLUMNS`: norm, mean, std,
min, max, absmean, nonfinite, numel, update_ratio; NaN where that sample did not compute
one). Histograms and small tensors' values are not kept (the latest sample has them). That is
``4 * len(STAT_COLUMNS)`` = 36 bytes per sampled node and sample plus a shared tuple of node
ids: 200 samples of a GPT-2's ~1,500 watched nodes take ~11 MB.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np

from ._constants import STAT_COLUMNS

#: Samples a watcher keeps by default (``w.watch(history=...)``).
DEFAULT_HISTORY = 200


class History:
    """A ring of the last ``size`` samples (see the module docstring)."""

    def __init__(self, size: int = DEFAULT_HISTORY):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"history must be a number of samples >= 1, got {size!r}.")
        self.size = size
        self._items: collections.deque[tuple[int, float, tuple[str, ...], np.ndarray]] = (
            collections.deque(maxlen=size)
        )
        self._ids: tuple[str, ...] = ()

    def add(self, step: int, when: float, stats: dict[str, dict[str, Any]]) -> None:
        """Keep one sample: ``stats`` by node id, as that sample computed them."""
        ids = tuple(stats)
        if ids == self._ids:
            ids = self._ids  # the same nodes as last time: one tuple for all such samples
        self._ids = ids
        nan = math.nan
        table = [[s.get(c, nan) for c in STAT_COLUMNS] for s in stats.values()]
        with np.errstate(over="ignore"):  # beyond float32: ±inf, as on the wire
            arr = np.array(table, dtype=np.float64).reshape(len(ids), len(STAT_COLUMNS))
            arr = arr.astype(np.float32)
        self._items.append((int(step), float(when), ids, arr))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def last_step(self) -> int | None:
        """Step of the latest kept sample (None before the first)."""
        return self._items[-1][0] if self._items else None

    @property
    def nbytes(self) -> int:
        """Bytes of the kept statistic arrays."""
        return sum(a.nbytes for *_, a in self._items)

    def items(self) -> list[tuple[int, float, dict[str, dict[str, float]]]]:
        """``(step, time, stats)`` of each kept sample, oldest first; ``stats`` by node id
        with the :data:`STAT_COLUMNS` as floats (``nonfinite`` and ``numel`` as ints)."""
        out = []
        for step, when, ids, arr in self._items:
            stats: dict[str, dict[str, float]] = {}
            for nid, row in zip(ids, arr.tolist(), strict=True):
                s = dict(zip(STAT_COLUMNS, row, strict=True))
                for key in ("nonfinite", "numel"):  # counts (float32 on the wire and here)
                    s[key] = int(s[key]) if math.isfinite(s[key]) else 0
                stats[nid] = s
            out.append((step, when, stats))
        return out
