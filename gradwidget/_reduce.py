"""Statistics of tensors spread over the ranks of a process group, reduced with collectives.

Each rank passes its own part of every tensor (an intermediate's gradient of its own batch,
a shard); the result equals :func:`gradwidget._stats.tensor_stats` of the whole (the
concatenation of the parts) on every rank:

* sums (count, non-finite count, sum, sum of squares, sum of absolute values; float64) are
  all-reduced with SUM: norm, mean, std, absmean and ``nonfinite`` follow;
* the range is agreed first (one all-reduce MAX of ``[max, -min]``), then every rank bins
  its part over that shared range with ``torch.histc`` and the counts are all-reduced with
  SUM: the histogram of the whole, bin for bin;
* a ``decision`` vector from rank 0 (when the next sample comes) rides in the first
  all-reduce (the others contribute zeros), so agreeing on the schedule costs no collective
  of its own.

Tensors stay on their device (an all-reduce of a few numbers per tensor on the device: with
nccl, no host copy of a gradient); one small host copy of the reduced numbers per step.
The norm level needs one collective, the full level three (four when a variance cancels).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._constants import HIST_BINS
from ._stats import as_float

#: Below this share of the sum of squares, the variance is taken by a second pass (as in
#: :mod:`gradwidget._stats`): ``sum (x - mean)^2`` all-reduced.
_CANCELLATION = 1e-12


def _flat(t: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    return torch.zeros(0, device=device) if t is None else as_float(t)


def _device(parts: list[torch.Tensor | None], group: Any) -> torch.device:
    for t in parts:
        if t is not None:
            return t.device
    backend = torch.distributed.get_backend(group)
    if backend == "nccl" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_stats(
    parts: list[torch.Tensor | None],
    group: Any = None,
    level: str = "full",
    decision: list[float] | None = None,
) -> tuple[list[dict[str, Any]], list[float]]:
    """Statistics of each tensor whose parts the ranks of ``group`` hold (``parts[i]``: this
    rank's part of tensor ``i``; None or empty when it holds none). Every rank calls it with
    the same number of tensors, in the same order.

    Returns the statistics (the keys of ``tensor_stats``, ``values`` None, ``reduced``: the
    number of ranks) and ``decision`` as rank 0 gave it (same length on every rank).
    """
    dist = torch.distributed
    device = _device(parts, group)
    xs = [_flat(t, device) for t in parts]
    n = len(xs)
    f64 = torch.float64
    k = len(decision or [])
    rank = dist.get_rank(group)
    # A non-finite sum flags NaN/Inf (one host copy for all tensors): only those tensors
    # get a second look, and their finite values are what the statistics cover.
    fins, bad = list(xs), [0] * n
    if n:
        first = torch.stack([x.sum(dtype=f64) for x in xs]).tolist()
        for i, v in enumerate(first):
            if not math.isfinite(v):
                fins[i] = xs[i][torch.isfinite(xs[i])]
                bad[i] = xs[i].numel() - fins[i].numel()
    counts = torch.tensor([[f.numel(), b] for f, b in zip(fins, bad, strict=True)], dtype=f64)
    parts_ = [counts.to(device).reshape(n, 2)] if n else []
    if n:
        parts_.append(
            torch.stack(
                [
                    torch.stack([f.sum(dtype=f64) for f in fins]),
                    torch.stack([torch.linalg.vector_norm(f, 2, dtype=f64) for f in fins]).pow(2),
                    torch.stack([torch.linalg.vector_norm(f, 1, dtype=f64) for f in fins]),
                ],
                dim=1,
            )
        )
    head = torch.cat(parts_, dim=1).reshape(-1) if n else torch.zeros(0, dtype=f64, device=device)
    tail = torch.zeros(k, dtype=f64, device=device)
    if k and rank == 0:
        tail = torch.tensor(decision, dtype=f64, device=device)
    sums = torch.cat([head, tail])
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    host = sums.tolist()

    agreed = host[5 * n :]
    rows = [host[5 * i : 5 * i + 5] for i in range(n)]
    out = []
    for row in rows:
        count, nonfinite, _, sq, l1 = row
        numel = int(count + nonfinite)
        out.append(
            {
                "norm": math.sqrt(sq) if count else math.nan,
                "mean": math.nan,
                "std": math.nan,
                "min": math.nan,
                "max": math.nan,
                "absmean": l1 / count if count else math.nan,
                "hist": None,
                "nonfinite": int(nonfinite),
                "numel": numel,
                "values": None,
                "level": level,
            }
        )
    if level != "full" or not n:
        return out, agreed
    ext = torch.full((n, 2), -math.inf, dtype=f64, device=device)
    for i, f in enumerate(fins):
        if f.numel():
            lo, hi = torch.aminmax(f)
            ext[i, 0], ext[i, 1] = hi.double(), -lo.double()
    dist.all_reduce(ext, op=dist.ReduceOp.MAX, group=group)
    edges = ext.tolist()
    hists = torch.zeros((n, HIST_BINS), dtype=f64, device=device)
    redo = []
    for i, (f, (hi, neg_lo), s, row) in enumerate(zip(fins, edges, out, rows, strict=True)):
        count, _, total, sq, _ = row
        if not count:
            continue
        lo = -neg_lo
        mean = total / count
        s.update(mean=mean, min=lo, max=hi)
        spread = sq - count * mean * mean
        if count < 2 or lo == hi:
            s["std"] = 0.0
        elif spread <= _CANCELLATION * sq and math.isfinite(spread):
            redo.append(i)
        else:
            s["std"] = math.sqrt(max(spread / (count - 1), 0.0))
        a, b = (lo - 1, hi + 1) if lo == hi else (lo, hi)  # what histc does with no range
        if f.numel():
            hists[i] = torch.histc(f, bins=HIST_BINS, min=a, max=b).to(f64)
    dist.all_reduce(hists, op=dist.ReduceOp.SUM, group=group)
    for s, h, row in zip(out, hists.tolist(), rows, strict=True):
        s["hist"] = h if row[0] else [0.0] * HIST_BINS
    if redo:  # the same on every rank: decided from reduced numbers
        dev = torch.zeros(len(redo), dtype=f64, device=device)
        for j, i in enumerate(redo):
            if fins[i].numel():
                dev[j] = (fins[i].double() - out[i]["mean"]).pow(2).sum()
        dist.all_reduce(dev, op=dist.ReduceOp.SUM, group=group)
        for i, v in zip(redo, dev.tolist(), strict=True):
            out[i]["std"] = math.sqrt(max(v / (rows[i][0] - 1), 0.0))
    return out, agreed
