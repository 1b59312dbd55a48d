"""Per-module aggregates of the latest gradient statistics (what a collapsed box stands for).

Pure: the drawn Graph and the statistics by node id in, plain numbers out. The browser shows
the same aggregates on collapsed module boxes (js/src/module_badges.js, same definitions).
"""

from __future__ import annotations

import math
from typing import Any

from ._graph import Graph, module_ancestors


def module_stats(graph: Graph, stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Aggregates per module path over every node nested inside it.

    Returns, per module path seen while recording:

    * ``max_norm`` / ``mean_norm``: largest / mean gradient norm of its nodes that have a
      sample (ops and parameters; each norm over the finite values, as in ``stats()``),
      NaN when none has; ``nodes``: how many have one.
    * ``params``: parameter tensors, ``numel``: their elements; ``nonfinite``: parameters
      whose gradient holds NaN/Inf; ``zero``: parameters whose gradient is all zeros;
      ``grad_norm``: L2 norm of all its parameter gradients together.
    * ``update_ratio``: ``‖Δw‖/‖w‖`` of the last optimizer step over all its parameters
      together (``sqrt(Σ‖Δw_i‖²) / sqrt(Σ‖w_i‖²)``, ``w`` after the step as for one
      parameter), None unless known for every parameter; ``max_update_ratio``: the largest
      single parameter's (None when none is known).
    """
    rows: dict[str, dict[str, Any]] = {}
    for path in graph.modules:
        rows[path] = {
            "max_norm": math.nan,
            "mean_norm": math.nan,
            "nodes": 0,
            "params": 0,
            "numel": 0,
            "nonfinite": 0,
            "zero": 0,
            "grad_norm": 0.0,
            "update_ratio": None,
            "max_update_ratio": None,
        }
    sums: dict[str, float] = {}
    moved: dict[str, list[float]] = {}  # path -> [Σ‖Δw‖², Σ‖w‖², parameters with both]
    for n in graph.nodes:
        if not n.module:
            continue
        s = stats.get(n.id)
        leaf = n.kind == "leaf"
        for path in module_ancestors(n.module):
            row = rows.get(path)
            if row is None:
                continue
            if leaf:
                row["params"] += 1
                row["numel"] += math.prod(n.shape) if n.shape is not None else 0
            if s is None:
                continue
            norm = s.get("norm", math.nan)
            if math.isfinite(norm):
                row["nodes"] += 1
                sums[path] = sums.get(path, 0.0) + norm
                if not norm <= row["max_norm"]:  # NaN (none yet) or smaller
                    row["max_norm"] = norm
            if not leaf:
                continue
            if s.get("nonfinite"):
                row["nonfinite"] += 1
            elif norm == 0:
                row["zero"] += 1
            if math.isfinite(norm):
                row["grad_norm"] += norm * norm
            r, d = s.get("update_ratio"), s.get("update_norm")
            if r is not None and math.isfinite(r):
                best = row["max_update_ratio"]
                row["max_update_ratio"] = r if best is None else max(best, r)
                # ‖w‖ after the step from r = ‖Δw‖/‖w‖; unmoved weights kept their norm.
                w = d / r if r > 0 and d is not None else s.get("weight_norm")
                if d is not None and w is not None and math.isfinite(d) and math.isfinite(w):
                    acc = moved.setdefault(path, [0.0, 0.0, 0])
                    acc[0] += d * d
                    acc[1] += w * w
                    acc[2] += 1
    for path, row in rows.items():
        if row["nodes"]:
            row["mean_norm"] = sums[path] / row["nodes"]
        row["grad_norm"] = math.sqrt(row["grad_norm"])
        acc = moved.get(path)
        if acc is not None and acc[2] == row["params"] and acc[1] > 0:
            row["update_ratio"] = math.sqrt(acc[0] / acc[1])
    return rows
