"""Wire formats: the only module that decides how data crosses to the browser."""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import numpy as np
import torch

from ._constants import HIST_BINS, STAT_COLUMNS
from ._graph import Graph
from ._search import haystack

#: Node columns sent to the browser, in this order.
NODE_COLUMNS = (
    "id",
    "kind",
    "label",
    "op",
    "shape",
    "dtype",
    "module",
    "source",
    "name",
    "saved_bytes",
    "use_rank",
    "search",
    "inputs",
)


def node_table(graph: Graph) -> dict[str, list[Any]]:
    """Column-oriented node table (compact JSON); row ``i`` is DOT node ``n{i}``."""
    cols: dict[str, list[Any]] = {c: [] for c in NODE_COLUMNS}
    rank = graph.use_rank()
    # Rows of each node's inputs (forward edges src -> dst), for walking the graph by keyboard.
    inputs: list[list[int]] = [[] for _ in graph.nodes]
    for src, dst in graph.edges:
        inputs[graph[dst].index].append(graph[src].index)
    for n in graph.nodes:
        cols["use_rank"].append(rank[n.id])
        cols["id"].append(n.id)
        cols["kind"].append(n.kind)
        cols["label"].append(n.label)
        cols["op"].append(n.op)
        cols["shape"].append(list(n.shape) if n.shape is not None else None)
        cols["dtype"].append(n.dtype)
        cols["module"].append(n.module)
        cols["source"].append(n.source)
        cols["name"].append(n.name)
        cols["saved_bytes"].append(n.saved_bytes)
        cols["search"].append(haystack(n, graph))  # the one matching rule (_search.py)
        cols["inputs"].append(inputs[n.index])
    return cols


#: Key of a packed value on the wire: ``{"zjson": <zlib-compressed UTF-8 JSON>}``.
PACKED_KEY = "zjson"


def pack_json(value: Any, _widget: Any = None) -> dict[str, Any]:
    """``value`` as zlib-compressed JSON in one binary buffer (a trait's ``to_json``).

    The node table repeats module paths, op names, dtypes and source lines row after row and
    the DOT repeats its styles: compressed they shrink 10-25x (a 24-layer TransformerEncoder's
    264 KB node table to ~11 KB), which keeps a graph widget's comm_open small. The browser
    inflates it synchronously with ``unpack`` in js/src/wire.js (``nodeTable(model)``...).
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return {PACKED_KEY: memoryview(zlib.compress(text.encode("utf-8"), 6))}


def unpack_json(value: Any, _widget: Any = None) -> Any:
    """Inverse of :func:`pack_json` (a trait's ``from_json``); plain values pass through."""
    if isinstance(value, dict) and PACKED_KEY in value:
        return json.loads(zlib.decompress(bytes(value[PACKED_KEY])).decode("utf-8"))
    return value


#: ``.tag(sync=True, **PACKED)``: the Python value stays as is, the wire carries it packed.
PACKED = {"to_json": pack_json, "from_json": unpack_json}


def module_table(graph: Graph) -> dict[str, dict[str, Any]]:
    """Per module path: class name, op/param counts and saved bytes (for hover)."""
    totals = graph.module_totals()
    return {p: {"type": m.type, **totals[p]} for p, m in graph.modules.items()}


def float32_array(values: Any) -> dict[str, Any]:
    """A tensor as ``{"shape", "dtype": "float32", "data"}`` with raw little-endian bytes.

    ipywidgets sends the bytes as a binary buffer (no JSON number lists); the browser
    reads ``data`` as a ``Float32Array`` of ``shape`` in row-major order.
    """
    arr = values.detach().cpu().to(torch.float32).numpy() if torch.is_tensor(values) else values
    arr = np.ascontiguousarray(arr, dtype="<f4")
    return {"shape": list(arr.shape), "dtype": "float32", "data": memoryview(arr.tobytes())}


# ---- training runs ----


def float_bytes(values: Any) -> bytes:
    """Little-endian float32 bytes (sent as a binary buffer, read as a Float32Array)."""
    return np.asarray(values, dtype="<f4").tobytes()


def run_points(
    run_id: int, loss_start: int, losses: list[float], lr_start: int, lrs: list[float]
) -> tuple[dict[str, Any], list[bytes]]:
    """A custom message carrying only the loss/lr points a run gained since the last flush.

    ``loss_start``/``lr_start`` are the indices of the first new point, so the browser can
    append (or, for 0, replace) and detect a gap.
    """
    content = {
        "type": "run_points",
        "run": run_id,
        "loss_start": loss_start,
        "lr_start": lr_start,
    }
    return content, [float_bytes(losses), float_bytes(lrs)]


#: Run fields sent in the ``run_info`` trait (everything but the per-step arrays).
RUN_SUMMARY_FIELDS = (
    "id",
    "lr",
    "optimizer",
    "schedule",
    "settings",
    "steps",
    "seed",
    "status",
    "error",
    "final_loss",
    "n_losses",
)


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe summary of one run for the ``run_info`` trait (no loss history)."""
    out = {k: run.get(k) for k in RUN_SUMMARY_FIELDS}
    losses = run.get("losses") or []
    out["n_losses"] = len(losses)
    final = losses[-1] if losses else None
    # JSON has no inf/nan: send them as strings the browser can show.
    out["final_loss"] = final if final is None or math.isfinite(final) else str(final)
    return out


# ---- live gradients ----
STATS_MAGIC = b"GWS1"


def encode_stats(stats: dict[str, dict[str, Any]], step: int) -> bytes:
    """One binary stats update for the nodes in ``stats`` (only what this sample changed).

    Layout, little-endian, every section 4-byte aligned::

        b"GWS1"  u32 n  u32 step  u32 n_values
        i32[n]                  node row in the ``nodes`` table (each stats' ``index``;
                                -1, a tensor the graph does not draw: skipped)
        f32[n, len(STAT_COLUMNS)]
        f32[n, 32]              histogram counts over [min, max] of the finite values
                                (all NaN: not computed this sample, keep the last one)
        u32[n] grad_len  u32[n] data_len     (0 unless the tensor has <= 64 elements)
        f32[n_values]           grad values then data values, node by node

    The browser keeps each node's history itself, so nothing is ever resent.
    """
    rows = [s for s in stats.values() if s["index"] >= 0]
    n = len(rows)
    ncol = len(STAT_COLUMNS)
    idx = np.fromiter((s["index"] for s in rows), dtype="<i4", count=n)
    nan, no_hist = math.nan, [math.nan] * HIST_BINS
    # One array per section from nested lists: a per-row loop into numpy cost ~20 us a row.
    table = [[s.get(c, nan) for c in STAT_COLUMNS] for s in rows]
    hists = [s["hist"] if s.get("hist") is not None else no_hist for s in rows]
    grads = [s.get("values") or [] for s in rows]
    datas = [s.get("data") or [] for s in rows]
    # Statistics beyond float32's range (an exploding run) are sent as ±inf, on purpose.
    with np.errstate(over="ignore"):
        scal = np.array(table, dtype=np.float64).reshape(n, ncol).astype("<f4")
        hist = np.array(hists, dtype=np.float64).reshape(n, HIST_BINS).astype("<f4")
    glen = np.fromiter((len(g) for g in grads), dtype="<u4", count=n)
    dlen = np.fromiter((len(d) for d in datas), dtype="<u4", count=n)
    values: list[float] = []
    for g, d in zip(grads, datas, strict=True):
        values += g
        values += d
    head = STATS_MAGIC + np.array([n, step & 0xFFFFFFFF, len(values)], dtype="<u4").tobytes()
    return b"".join(
        [
            head,
            idx.tobytes(),
            scal.tobytes(),
            hist.tobytes(),
            glen.tobytes(),
            dlen.tobytes(),
            np.asarray(values, dtype="<f4").tobytes(),
        ]
    )


def stats_columns(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The node rows (int32) and the float32 ``[n, len(STAT_COLUMNS)]`` statistics of an
    :func:`encode_stats` update, copied out of it (no per-node work: what history keeps)."""
    if buf[:4] != STATS_MAGIC:
        raise ValueError("Not a gradwidget stats update.")
    n = int(np.frombuffer(buf, dtype="<u4", count=1, offset=4)[0])
    rows = np.frombuffer(buf, dtype="<i4", count=n, offset=16).copy()
    ncol = len(STAT_COLUMNS)
    scal = np.frombuffer(buf, dtype="<f4", count=n * ncol, offset=16 + 4 * n)
    return rows, scal.reshape(n, ncol).copy()


def decode_stats(buf: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_stats` (the browser has its own in js/src/wire.js)."""
    if buf[:4] != STATS_MAGIC:
        raise ValueError("Not a gradwidget stats update.")
    n, step, nvals = np.frombuffer(buf, dtype="<u4", count=3, offset=4).tolist()
    off = 16
    ncol = len(STAT_COLUMNS)

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal off
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=off)
        off += 4 * count
        return arr

    idx = take("<i4", n)
    scal = take("<f4", n * ncol).reshape(n, ncol)
    hist = take("<f4", n * HIST_BINS).reshape(n, HIST_BINS)
    glen = take("<u4", n)
    dlen = take("<u4", n)
    vals = take("<f4", nvals)
    rows, pos = {}, 0
    for r in range(n):
        row = dict(zip(STAT_COLUMNS, scal[r].tolist(), strict=True))
        row["hist"] = hist[r].tolist()
        row["values"] = vals[pos : pos + glen[r]].tolist() or None
        pos += int(glen[r])
        row["data"] = vals[pos : pos + dlen[r]].tolist() or None
        pos += int(dlen[r])
        rows[int(idx[r])] = row
    return {"step": step, "rows": rows}
