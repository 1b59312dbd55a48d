"""The Jacobian explorer's math: J of ``f`` at ``x``, vᵀJ both ways, block summaries.

Pure torch, no widget: leaves and forward checks, J by chunked :func:`torch.func.jacrev`
(within a memory budget and a time guard, falling back to autograd), vᵀJ by backward, and
the block reduction that shrinks a large J for display. :mod:`._jacobian` wires it to the
browser and :mod:`._jacobian_plot` to matplotlib.

Conventions: J is the 2-D matrix ``(m, n)`` with the output flattened along rows and all
inputs flattened and concatenated along columns, so ``J[i, j] = ∂y_i/∂x_j``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch.overrides import TorchFunctionMode

#: Bytes one vmapped torch.func.jacrev batch may use; beyond it jacrev runs in row chunks.
JACREV_MEMORY = 1 << 30
#: Refuse J when its m backward passes are estimated to take longer than this (seconds).
MAX_SECONDS = 30.0

Inputs = tuple[torch.Tensor, ...]


def as_leaves(x: Any) -> tuple[Inputs, bool]:
    """Fresh leaf copies of ``x`` (a tensor or tuple of tensors) that require grad.

    Copies, so the explorer never touches the caller's tensors or their ``.grad``, and an
    ``x`` that does not require grad is handled for the user.

    Returns
    -------
    leaves, is_tuple
    """
    is_tuple = isinstance(x, (tuple, list))
    xs = tuple(x) if is_tuple else (x,)
    if not xs:
        raise ValueError("jacobian() needs at least one input tensor; got an empty tuple.")
    out = []
    for k, t in enumerate(xs):
        name = f"x[{k}]" if is_tuple else "x"
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor, got {type(t).__name__}. "
                "Pass a tensor or a tuple of tensors, e.g. jacobian(f, torch.randn(3))."
            )
        if not t.dtype.is_floating_point:
            raise TypeError(
                f"{name} has dtype {t.dtype}: only floating-point tensors have gradients. "
                f"Convert it first, e.g. {name}.float()."
            )
        if t.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): J would have no columns.")
        out.append(t.detach().clone().requires_grad_(True))
    return tuple(out), is_tuple


def forward(f: Callable[..., Any], leaves: Inputs) -> torch.Tensor:
    """``f(*leaves)``, checked to be a differentiable floating-point tensor."""
    y = f(*leaves)
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"f must return a torch.Tensor, but it returned {type(y).__name__}. "
            "For several outputs, stack or concatenate them into one tensor "
            "(e.g. torch.cat([a.flatten(), b.flatten()]))."
        )
    if not y.dtype.is_floating_point:
        raise TypeError(
            f"f returned a {y.dtype} tensor: integer and boolean results (argmax, comparisons, "
            "rounding to int, ...) are not differentiable, so there is no Jacobian."
        )
    if y.numel() == 0:
        raise ValueError(f"f returned an empty tensor (shape {tuple(y.shape)}): J has no rows.")
    if not y.requires_grad:
        raise ValueError(
            "f's output does not depend on x through autograd (it has no grad_fn). Something "
            "in f cut the graph: a non-differentiable op (histc, bucketize, ...), .detach(), "
            ".item(), .numpy(), .data, torch.no_grad(), or building a new tensor from values "
            "(torch.tensor(...)). Keep the computation in differentiable torch ops."
        )
    return y


def _flatten(parts: Sequence[torch.Tensor], m: int) -> torch.Tensor:
    return torch.cat([p.reshape(m, -1) for p in parts], dim=1)


class JacobianResult(NamedTuple):
    """What :func:`jacobian_matrix` computed, and how."""

    J: torch.Tensor
    #: "jacrev" or "autograd".
    method: str
    #: Rows per vmapped jacrev batch; None when all m rows went in one batch (or autograd).
    chunk_size: int | None
    #: Why jacrev was not used ("" when it was).
    fallback_reason: str


class _OutputBytes(TorchFunctionMode):
    """Adds up the bytes of every tensor the torch calls inside the mode return."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.total += t.numel() * t.element_size()
        return out


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("can't allocate memory", "not enough memory", "out of memory")
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _not_differentiable(err: NotImplementedError) -> ValueError:
    return ValueError(
        f"f uses an operation PyTorch cannot differentiate ({err}), so there is no "
        "Jacobian. Replace that op with a differentiable one, or differentiate with "
        "respect to another argument."
    )


class _Cost:
    """One forward pass of ``f`` (timed, and its tensors' bytes added up) and timed backward
    passes through it: reverse mode costs one forward plus m backward passes, batched or not.
    """

    def __init__(self, f: Callable[..., Any], xs: Inputs) -> None:
        self._leaves, _ = as_leaves(xs)
        sizes = _OutputBytes()
        start = time.perf_counter()
        with sizes:
            self._y = forward(f, self._leaves)
        self.forward_seconds = time.perf_counter() - start
        self.m = self._y.numel()
        self.forward_bytes = sizes.total
        self.backward_seconds = math.inf
        self.time_backward()  # also checks that every op in f has a derivative

    def time_backward(self) -> None:
        """Time one more backward pass; keep the fastest (the first one warms up)."""
        start = time.perf_counter()
        try:
            torch.autograd.grad(
                self._y,
                self._leaves,
                torch.ones_like(self._y),
                retain_graph=True,
                allow_unused=True,
            )
        except NotImplementedError as err:
            raise _not_differentiable(err) from err
        self.backward_seconds = min(self.backward_seconds, time.perf_counter() - start)

    @property
    def seconds(self) -> float:
        """Estimated time for J: one forward and m backward passes."""
        return self.forward_seconds + self.m * self.backward_seconds

    def release(self) -> None:
        """Free the timing graph before J is computed."""
        self._y = None


def _jacrev_chunk(m: int, row_bytes: int, memory_budget: int) -> int | None:
    """Rows per vmapped jacrev batch so that the batch stays within ``memory_budget``."""
    if m * row_bytes <= memory_budget:
        return None
    return max(1, memory_budget // row_bytes)


def jacobian_matrix(
    f: Callable[..., Any],
    leaves: Inputs,
    method: str = "auto",
    *,
    memory_budget: int = JACREV_MEMORY,
    max_seconds: float | None = MAX_SECONDS,
) -> JacobianResult:
    """J of ``f`` at ``leaves`` as an ``(m, n)`` matrix, and how it was computed.

    Parameters
    ----------
    f : callable
        ``f(*leaves) -> Tensor``.
    leaves : tuple of tensors
        The inputs (see :func:`as_leaves`).
    method : {"auto", "jacrev", "autograd"}
        ``"jacrev"`` uses :func:`torch.func.jacrev`; ``"autograd"`` uses
        :func:`torch.autograd.functional.jacobian`; ``"auto"`` tries jacrev and falls back
        to autograd where jacrev cannot run (e.g. an ``autograd.Function`` without
        ``setup_context``), with a warning and the reason in ``fallback_reason``.
    memory_budget : int
        Bytes that one vmapped jacrev batch may use. jacrev differentiates all m output
        rows at once; when the rows' intermediates (estimated from the sizes of the
        tensors f creates) would exceed this, it runs in chunks of rows instead, and
        smaller chunks again if it still runs out of memory.
    max_seconds : float or None
        Refuse (``ValueError``) before computing J when its estimated cost, one timed
        forward of f plus m times one timed backward pass (the fastest of up to three),
        is over this many seconds. None disables the check.

    Returns
    -------
    JacobianResult
        ``(J, method, chunk_size, fallback_reason)``.
    """
    if method not in ("auto", "jacrev", "autograd"):
        raise ValueError(f"method must be 'auto', 'jacrev' or 'autograd', got {method!r}.")
    xs = tuple(t.detach() for t in leaves)
    n = sum(t.numel() for t in xs)
    cost = _Cost(f, xs)
    m = cost.m
    if max_seconds is not None:
        for _ in range(2):  # confirm on warm passes before refusing
            if cost.seconds <= max_seconds:
                break
            cost.time_backward()
        if cost.seconds > max_seconds:
            raise ValueError(
                f"Computing J ({m:,} × {n:,}) needs {m:,} backward passes of f, about "
                f"{cost.seconds:,.0f} s at {cost.backward_seconds * 1e3:,.1f} ms each, over "
                f"max_seconds={max_seconds:g}. Use a smaller x (or fewer outputs of f), or "
                "pass a larger max_seconds (None disables this check) to wait for it."
            )
    cost.release()
    reason = ""
    if method in ("auto", "jacrev"):
        itemsize = xs[0].element_size()
        # Per vmapped row: a gradient for each intermediate (x2 for backward temporaries),
        # the basis row and the result row.
        row_bytes = 2 * cost.forward_bytes + (m + n) * itemsize
        chunk = _jacrev_chunk(m, row_bytes, memory_budget)
        argnums = tuple(range(len(xs)))
        while True:
            try:
                parts = torch.func.jacrev(f, argnums=argnums, chunk_size=chunk)(*xs)
                return JacobianResult(_flatten(parts, m).detach(), "jacrev", chunk, "")
            except Exception as err:
                if _is_out_of_memory(err) and (chunk or m) > 1:
                    chunk = max(1, (chunk or m) // 8)
                    continue
                if method == "jacrev":
                    raise
                jacrev_error = err
                oom = _is_out_of_memory(err)
                how = "ran out of memory even one row at a time" if oom else "cannot run f"
                reason = f"torch.func.jacrev {how} ({_first_line(err)})"
                break
        warnings.warn(
            f"{reason}; computing J with torch.autograd.functional.jacobian instead "
            f"({m:,} backward passes, about {cost.seconds:,.1f} s).",
            RuntimeWarning,
            stacklevel=4,  # jacobian() -> JacobianWidget -> here: point at the caller
        )
    try:
        parts = torch.autograd.functional.jacobian(f, xs, strict=False)
    except NotImplementedError as err:
        raise _not_differentiable(err) from err
    except Exception as err:
        if not reason:
            raise
        raise RuntimeError(
            "Could not compute the Jacobian of f: torch.func.jacrev failed with "
            f"{jacrev_error!r} and torch.autograd.functional.jacobian with {err!r}."
        ) from err
    return JacobianResult(_flatten(parts, m).detach(), "autograd", None, reason)


def as_vector(
    v: Any, m: int, like: torch.Tensor, shape: Sequence[int] | None = None
) -> torch.Tensor:
    """``v`` as a flat tensor of ``m`` finite entries in ``like``'s dtype.

    ``shape`` (f's output shape) only words the error message.
    """
    what = (
        f"v must be numbers, one weight per output component of f ({m} of them), "
        "as a flat list/tensor"
        + (f" or shaped like f(x) {tuple(shape)}" if shape is not None else " or shaped like f(x)")
    )
    if isinstance(v, (str, bytes)):
        raise TypeError(f"{what}; got the {type(v).__name__} {v!r:.40}.")
    try:
        vec = torch.as_tensor(v, dtype=like.dtype).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{what}; got {type(v).__name__} ({err}).") from err
    if vec.numel() != m:
        raise ValueError(
            f"v must have one entry per output component ({m}), got {vec.numel()}. "
            "It may be flat or shaped like f's output."
        )
    if not torch.isfinite(vec).all():
        raise ValueError("v has non-finite entries (nan or inf).")
    return vec


def vjp_backward(f: Callable[..., Any], leaves: Inputs, v: torch.Tensor) -> torch.Tensor:
    """vᵀJ by autograd: ``y.backward(v)`` on fresh leaves, their ``.grad`` flattened."""
    fresh, _ = as_leaves(leaves)
    y = forward(f, fresh)
    # inputs=: accumulate into x only, never into parameters f closes over (a module's).
    y.backward(v.reshape(y.shape).to(y.dtype), inputs=list(fresh))
    return flat_grad(fresh)


def flat_grad(leaves: Inputs) -> torch.Tensor:
    """The leaves' ``.grad`` flattened and concatenated to length n (zeros where None)."""
    return torch.cat(
        [(t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1) for t in leaves]
    ).detach()


def close(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, float]:
    """Whether two vᵀJ results agree to rounding (summation order differs), and max |a-b|."""
    a64, b64 = a.double(), b.double()
    diff = float((a64 - b64).abs().max()) if a.numel() else 0.0
    eps = torch.finfo(a.dtype if a.dtype.is_floating_point else torch.float32).eps
    scale = max(float(a64.abs().max()), float(b64.abs().max()), 1.0)
    return diff <= 1e3 * eps * scale, diff


def summarize(J: torch.Tensor, max_rows: int, max_cols: int, reduce: str = "mean"):
    """Shrink ``J`` to at most ``max_rows × max_cols`` cells by block reduction.

    ``reduce="mean"`` averages each block; ``"absmax"`` keeps its entry of largest
    magnitude (sign kept), which keeps thin structure such as a diagonal visible.

    Returns
    -------
    values, (row_block, col_block)
        ``values[r, c]`` summarises ``J[r*rb:(r+1)*rb, c*cb:(c+1)*cb]``; blocks of 1 mean
        the matrix is unchanged.
    """
    m, n = J.shape
    blocks = (math.ceil(m / max_rows), math.ceil(n / max_cols))
    return reduce_blocks(J, *blocks, reduce), blocks


def reduce_blocks(J: torch.Tensor, rb: int, cb: int, reduce: str = "mean") -> torch.Tensor:
    """Reduce each ``rb × cb`` block of ``J`` to one value (ragged last blocks included)."""
    if reduce not in ("mean", "absmax"):
        raise ValueError(f"reduce must be 'mean' or 'absmax', got {reduce!r}.")
    if rb == 1 and cb == 1:
        return J
    m, n = J.shape
    ro, co = math.ceil(m / rb), math.ceil(n / cb)
    padded = torch.nn.functional.pad(J, (0, co * cb - n, 0, ro * rb - m))
    blocks = padded.reshape(ro, rb, co, cb).permute(0, 2, 1, 3).reshape(ro, co, rb * cb)
    if reduce == "absmax":
        idx = blocks.abs().argmax(dim=2, keepdim=True)
        return blocks.gather(2, idx).squeeze(2)
    rows = torch.full((ro,), float(rb), dtype=J.dtype)
    rows[-1] = m - (ro - 1) * rb
    cols = torch.full((co,), float(cb), dtype=J.dtype)
    cols[-1] = n - (co - 1) * cb
    return blocks.sum(dim=2) / torch.outer(rows, cols)
