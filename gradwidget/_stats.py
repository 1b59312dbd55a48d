"""Gradient statistics: pure reductions of tensors on their own device.

No hooks and no state: the watcher hands over the tensors of one sample and gets plain
Python numbers back.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._constants import HIST_BINS

#: Tensors with at most this many elements also send their values (micrograd's data | grad).
SMALL = 64


def as_float(t: torch.Tensor) -> torch.Tensor:
    """``t`` flat, in a float dtype the reductions take (complex as magnitudes)."""
    x = t.detach().reshape(-1)
    if x.is_complex():
        x = x.abs()
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def _dense_key(t: torch.Tensor) -> tuple | None:
    """Identity of the memory block ``t`` covers exactly (any dim order), else None."""
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape, strict=True) if sz != 1)
    expect = 1
    for st, sz in dims:
        if st != expect:
            return None
        expect *= sz
    return (t.device, t.data_ptr(), t.numel(), t.dtype)


def _norms(xs: list[torch.Tensor], order: int, dtype: torch.dtype | None) -> list[torch.Tensor]:
    """Vector norms (accumulated in ``dtype``, None: the tensors' own), one fused op."""
    try:
        return list(torch._foreach_norm(xs, order, dtype=dtype))
    except (AttributeError, TypeError, RuntimeError):  # older torch
        return [torch.linalg.vector_norm(x, order, dtype=dtype) for x in xs]


#: Below this share of L2^2, ``L2^2 - n mean^2`` is within float64 rounding: the variance is
#: then taken by a float64 pass over that tensor alone (|mean| >> std).
_CANCELLATION = 1e-12


def _moments(xs: list[torch.Tensor]) -> list[list[float]]:
    """Per non-empty flat tensor ``[mean, std, L2, L1, min, max]``; one host sync per device.

    Sums and norms accumulate in float64; the variance comes from them as
    ``(L2^2 - n mean^2) / (n - 1)``, one pass fewer than ``std_mean``, except where the two
    terms cancel: that tensor gets a float64 variance pass of its own. A non-finite mean
    flags NaN/Inf.
    """
    acc = torch.float64
    out: list[list[float]] = [[] for _ in xs]
    for idx in _by_device(xs):
        group = [xs[i] for i in idx]
        mm = [torch.aminmax(x) for x in group]
        cols = torch.stack(
            [
                torch.stack([x.sum(dtype=acc) for x in group]),
                torch.stack(_norms(group, 2, acc)),
                torch.stack(_norms(group, 1, acc)),
                torch.stack([m[0] for m in mm]),
                torch.stack([m[1] for m in mm]),
            ]
        ).double()
        for i, (total, l2, l1, lo, hi) in zip(idx, cols.T.tolist(), strict=True):
            x = xs[i]
            n = x.numel()
            mean = total / n
            spread = l2 * l2 - n * mean * mean
            if n < 2 or lo == hi:
                var = 0.0
            elif spread <= _CANCELLATION * l2 * l2 and math.isfinite(spread):
                var = float(x.double().var())
            else:
                var = spread / (n - 1)
            out[i] = [mean, math.sqrt(max(var, 0.0)), l2, l1, lo, hi]
    return out


#: How much of :func:`tensor_stats` to compute: everything, no histogram, or norms only.
LEVELS = ("full", "norm")


def tensor_stats(tensors: list[torch.Tensor], level: str = "full") -> list[dict[str, Any]]:
    """Statistics of each tensor, reduced on its own device.

    Returns, per tensor, plain Python numbers: ``norm``, ``mean``, ``std`` (0 for a single
    value), ``min``, ``max``, ``absmean`` and the 32-bin ``hist`` (equal to ``torch.histc``
    over [min, max]), all over the *finite* values, plus ``nonfinite`` (count of NaN/Inf),
    ``numel`` and ``values`` (a flat list when the tensor has at most 64 elements, else
    None). NaN/Inf (seen as a non-finite sum) costs a second pass over that tensor only.

    ``level="norm"`` computes only ``norm`` and ``nonfinite`` (one fused reduction for all
    tensors): what the live colors need at 5 Hz. The other statistics are then NaN and
    ``hist`` None; :data:`COMPUTED` says which are real, and ``level`` is in every result.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}; got {level!r}.")
    if level != "full":
        return _cheap_stats(tensors, level)
    # A transposed view of the same gradient (TBackward's grad vs the weight's .grad) has
    # the same statistics: reduce each dense block of memory once.
    first: dict[tuple, int] = {}
    alias: list[int | None] = []
    for i, t in enumerate(tensors):
        key = _dense_key(t)
        j = first.setdefault(key, i) if key is not None else i
        alias.append(j if j != i else None)
    own = [i for i, a in enumerate(alias) if a is None]
    flat: list[Any] = [None] * len(tensors)
    for i in own:
        flat[i] = as_float(tensors[i])
    rows: list[Any] = [[math.nan] * 6 for _ in flat]
    filled = [i for i in own if flat[i].numel()]
    for i, row in zip(filled, _moments([flat[i] for i in filled]), strict=True):
        rows[i] = row
    nonfinite = [0] * len(flat)
    for i in filled:
        x = flat[i]
        # Norm-level rows carry NaN by design: look at the norms alone there.
        if not all(math.isfinite(v) for v in rows[i]):
            fin = x[torch.isfinite(x)]
            nonfinite[i] = x.numel() - fin.numel()
            rows[i] = _moments([fin])[0] if fin.numel() else [math.nan] * 6
    hists: list[Any] = [None] * len(flat)
    if level == "full":
        clean = [i for i in own if nonfinite[i] == 0]
        made = _histograms([flat[i] for i in clean], [rows[i] for i in clean])
        for i, h in zip(clean, made, strict=True):
            hists[i] = h
        for i in own:
            if nonfinite[i]:
                hists[i] = _histc(flat[i], rows[i][4], rows[i][5])
    for i, a in enumerate(alias):
        if a is not None:
            rows[i], hists[i], nonfinite[i] = rows[a], hists[a], nonfinite[a]
    out = []
    for t, row, nf, hist in zip(tensors, rows, nonfinite, hists, strict=True):
        numel = t.numel()
        n = numel - nf
        mean, std, norm, l1, lo, hi = row
        out.append(
            {
                "norm": norm,
                "mean": mean,
                "std": std,
                "min": lo,
                "max": hi,
                "absmean": l1 / n if n else math.nan,
                "hist": hist,
                "nonfinite": nf,
                "numel": numel,
                "values": as_float(t).tolist() if numel <= SMALL else None,
                "level": "full",
            }
        )
    return out


#: The statistics each level computes (the others are NaN / None: keep earlier values).
COMPUTED = {
    "full": frozenset(("norm", "mean", "std", "min", "max", "absmean", "hist", "nonfinite")),
    "norm": frozenset(("norm", "nonfinite")),
}


def _cheap_stats(tensors: list[torch.Tensor], level: str) -> list[dict[str, Any]]:
    """:func:`tensor_stats` at the norm level, on the tensors as they are.

    No flattening (a transposed gradient would be copied) and no alias search (reducing an
    alias twice costs less than finding it): the 5 Hz path of a GPT-2's ~300 tensors.
    """
    xs = []
    for t in tensors:
        x = t.detach()
        if x.is_complex():
            x = x.abs()
        if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        xs.append(x)
    filled = [i for i, x in enumerate(xs) if x.numel()]
    norms = [math.nan] * len(xs)
    for i, v in zip(filled, _fused_norms([xs[i] for i in filled]), strict=True):
        norms[i] = v
    out = []
    for t, x, norm in zip(tensors, xs, norms, strict=True):
        numel, nf = t.numel(), 0
        if numel and not math.isfinite(norm):
            flat = x.reshape(-1)
            fin = flat[torch.isfinite(flat)]
            nf = numel - fin.numel()
            norm = _fused_norms([fin])[0] if fin.numel() else math.nan
        out.append(
            {
                "norm": norm,
                "mean": math.nan,
                "std": math.nan,
                "min": math.nan,
                "max": math.nan,
                "absmean": math.nan,
                "hist": None,
                "nonfinite": nf,
                "numel": numel,
                "values": x.reshape(-1).tolist() if numel <= SMALL else None,
                "level": level,
            }
        )
    return out


def _fused_norms(xs: list[torch.Tensor]) -> list[float]:
    """The L2 norm of each tensor: one fused float32 reduction per device.

    What the live colors need, and all the intermediate tier can afford on big graphs: the
    float64 variant of the same reduction took 4x as long over a GPT-2's intermediates.
    """
    out = [math.nan] * len(xs)
    for idx in _by_device(xs):
        norms = torch.stack(_norms([xs[i] for i in idx], 2, None)).double().tolist()
        for i, v in zip(idx, norms, strict=True):
            out[i] = v
    return out


def _by_device(xs: list[torch.Tensor]) -> list[list[int]]:
    """Indices of ``xs`` grouped by device (one host sync per device)."""
    groups: dict[torch.device, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(x.device, []).append(i)
    return list(groups.values())


def _histc(x: torch.Tensor, lo: float, hi: float) -> list[float]:
    if not math.isfinite(lo):
        return [0.0] * HIST_BINS
    if lo == hi:  # what histc does with an empty range
        lo, hi = lo - 1, hi + 1
    # histc ignores NaN and values outside [lo, hi] (the infinities).
    return torch.histc(x, bins=HIST_BINS, min=lo, max=hi).double().tolist()


def _histograms(xs: list[torch.Tensor], rows: list[list[float]]) -> list[list[float]]:
    """32-bin histograms of finite flat tensors over their [min, max], equal to ``histc``.

    One fused pass for all tensors of a device instead of a ``histc`` call each (per-tensor
    ``histc`` took 23 ms for a GPT-2's 52 gradients here, this 10 ms): the bin is computed
    with histc's own float arithmetic, ``trunc((x - lo) * bins / (hi - lo))`` clamped to the
    last bin, then offset by ``bins * k`` for tensor k and all are counted at once.
    """
    out: list[list[float]] = [[0.0] * HIST_BINS for _ in xs]
    by_dev: dict[tuple, list[int]] = {}
    for i, x in enumerate(xs):
        if x.numel():
            by_dev.setdefault((x.device, x.dtype), []).append(i)
    for idx in by_dev.values():
        edges = [(rows[i][4], rows[i][5]) for i in idx]
        # An empty range widens to [v - 1, v + 1], as histc does.
        edges = [(a - 1, b + 1) if a == b else (a, b) for a, b in edges]
        group = [xs[i] for i in idx]
        v = torch._foreach_sub(group, [a for a, _ in edges])
        torch._foreach_mul_(v, float(HIST_BINS))
        torch._foreach_div_(v, [b - a for a, b in edges])
        torch._foreach_trunc_(v)
        torch._foreach_clamp_max_(v, float(HIST_BINS - 1))
        torch._foreach_add_(v, [float(HIST_BINS * k) for k in range(len(group))])
        counts = torch.bincount(torch.cat(v).to(torch.int64), minlength=HIST_BINS * len(group))
        for k, h in zip(idx, counts.view(len(group), HIST_BINS).double().tolist(), strict=True):
            out[k] = h
    return out


def to_host(items: list[torch.Tensor]) -> list[Any]:
    """``tolist()`` of same-shape tensors with one device-to-host copy per device."""
    out: list[Any] = [None] * len(items)
    for idx in _by_device(items):
        host = torch.stack([items[i] for i in idx]).double().tolist()
        for i, v in zip(idx, host, strict=True):
            out[i] = v
    return out
