"""Jacobian explorer: J of ``f`` at ``x``, vector-Jacobian products, gradient accumulation.

The model part (leaves, forward checks, J, vᵀJ both ways, block summary) needs no widget;
:class:`JacobianWidget` wires it to the browser (``js/src/jacobian.js``) and to matplotlib.

Conventions: J is the 2-D matrix ``(m, n)`` with the output flattened along rows and all
inputs flattened and concatenated along columns, so ``J[i, j] = ∂y_i/∂x_j``.
"""

from __future__ import annotations

import inspect
import math
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import anywidget
import torch
import traitlets
from torch.overrides import TorchFunctionMode

from ._wire import float32_array

STATIC = Path(__file__).parent / "static"

#: Largest number of heatmap cells per axis sent to the browser; bigger J is block-summarised.
MAX_CELLS_PER_AXIS = 512
#: J larger than this is refused (it would not fit comfortably in memory).
MAX_ENTRIES = 25_000_000
#: Bytes one vmapped torch.func.jacrev batch may use; beyond it jacrev runs in row chunks.
JACREV_MEMORY = 1 << 30
#: Refuse J when its m backward passes are estimated to take longer than this (seconds).
MAX_SECONDS = 30.0
#: Outputs up to this count get one slider each for v.
MAX_SLIDERS = 24

Inputs = tuple[torch.Tensor, ...]


# --------------------------------------------------------------------------- model


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


def _as_vector(
    v: Any, m: int, like: torch.Tensor, shape: Sequence[int] | None = None
) -> torch.Tensor:
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
    return torch.cat(
        [(t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1) for t in fresh]
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


def _input_names(f: Callable[..., Any], k: int, is_tuple: bool) -> list[str]:
    try:
        params = [
            p.name
            for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    if len(params) >= k and not (k == 1 and params[0] in ("input", "args")):
        return params[:k]
    return [f"x{i}" for i in range(k)] if is_tuple else ["x"]


# --------------------------------------------------------------------------- widget


def _pyplot_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # optional dependency
        raise ImportError(
            "plot() and static export need matplotlib: pip install matplotlib "
            "(or pip install 'gradwidget[plot]')."
        ) from err
    return Figure


class JacobianWidget(anywidget.AnyWidget):
    """Interactive heatmap of the Jacobian of ``f`` at ``x`` and of vᵀJ computed two ways.

    Build it with :func:`gradwidget.jacobian`. Headless use needs no browser:
    :attr:`J`, :meth:`vjp`, :meth:`backward`, :meth:`zero_grad`, :meth:`plot`,
    :meth:`save`, :meth:`to_image`.
    """

    _esm = STATIC / "jacobian.js"
    _css = STATIC / "jacobian.css"

    title = traitlets.Unicode("").tag(sync=True)
    out_name = traitlets.Unicode("y").tag(sync=True)
    out_shape = traitlets.List(traitlets.Int()).tag(sync=True)
    in_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    in_shapes = traitlets.List(traitlets.List(traitlets.Int())).tag(sync=True)
    method = traitlets.Unicode("").tag(sync=True)
    #: Why J was not computed with torch.func.jacrev ("" when it was); also in ``note``.
    fallback_reason = traitlets.Unicode("").tag(sync=True)
    # The heatmap: float32 buffer of at most MAX_CELLS_PER_AXIS² cells, plus how it was made.
    heat = traitlets.Dict().tag(sync=True)
    blocks = traitlets.List(traitlets.Int(), [1, 1]).tag(sync=True)
    reduce = traitlets.Unicode("mean").tag(sync=True)
    vmax = traitlets.Float(0.0).tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)
    max_sliders = traitlets.Int(MAX_SLIDERS).tag(sync=True)
    # Interaction, settable from both sides.
    v = traitlets.List(traitlets.Float()).tag(sync=True)
    accumulate = traitlets.Bool(False).tag(sync=True)
    # vᵀJ two ways and the accumulated x.grad, summarised like the heatmap's columns.
    vjp_view = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        f: Callable[..., Any],
        x: Any,
        *,
        method: str = "auto",
        v: Any = None,
        reduce: str = "mean",
        max_cells: int = MAX_CELLS_PER_AXIS,
        max_entries: int = MAX_ENTRIES,
        memory_budget: int = JACREV_MEMORY,
        max_seconds: float | None = MAX_SECONDS,
        input_names: Sequence[str] | None = None,
        output_name: str = "y",
        title: str = "",
        **kw: Any,
    ):
        if not callable(f):
            raise TypeError(f"f must be callable (a function or module), got {type(f).__name__}.")
        leaves, is_tuple = as_leaves(x)
        y = forward(f, leaves)
        m, n = y.numel(), sum(t.numel() for t in leaves)
        if m * n > max_entries:
            raise ValueError(
                f"J would have {m:,} × {n:,} = {m * n:,} entries, over max_entries="
                f"{max_entries:,}. Use a smaller x (or fewer outputs), or raise max_entries."
            )
        names = list(input_names) if input_names is not None else None
        if names is not None and len(names) != len(leaves):
            raise ValueError(f"input_names has {len(names)} names for {len(leaves)} inputs.")
        self.f = f
        self._leaves = leaves
        self._is_tuple = is_tuple
        self._y = y  # graph kept (retain_graph) for the accumulation demo
        self._calls = 0
        result = jacobian_matrix(
            f, leaves, method, memory_budget=memory_budget, max_seconds=max_seconds
        )
        self._J, self._chunk_size = result.J, result.chunk_size
        values, blocks = summarize(self._J, max_cells, max_cells, reduce)
        super().__init__(
            title=title,
            out_name=output_name,
            out_shape=list(y.shape),
            in_names=names or _input_names(f, len(leaves), is_tuple),
            in_shapes=[list(t.shape) for t in leaves],
            method=result.method,
            fallback_reason=result.fallback_reason,
            heat=float32_array(values),
            blocks=list(blocks),
            reduce=reduce,
            vmax=float(values.abs().max()),  # the scale of what is drawn
            note=self._note(blocks, reduce, result.fallback_reason),
            v=[1.0] * m,
            **kw,
        )
        if v is not None:
            self.v = self._vector(v).tolist()
        self.on_msg(self._on_msg)

    # ---------------------------------------------------------------- public API

    @property
    def J(self) -> torch.Tensor:
        """The Jacobian as an ``(m, n)`` tensor: rows = flattened output, columns = inputs."""
        return self._J

    @property
    def chunk_size(self) -> int | None:
        """Rows per vmapped jacrev batch (None: all rows at once, or not jacrev)."""
        return self._chunk_size

    @property
    def x(self) -> torch.Tensor | Inputs:
        """The explorer's own leaf copies of x (their ``.grad`` is what accumulates)."""
        return self._leaves if self._is_tuple else self._leaves[0]

    @property
    def y(self) -> torch.Tensor:
        """f(x), with its autograd graph."""
        return self._y

    @property
    def grad(self) -> torch.Tensor:
        """The leaves' accumulated ``.grad`` flattened to length n (zeros when None)."""
        return torch.cat(
            [
                (t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1)
                for t in self._leaves
            ]
        ).detach()

    @property
    def backward_calls(self) -> int:
        """Backward calls since the last :meth:`zero_grad`."""
        return self._calls

    def vjp(self, v: Any = None, method: str = "matmul") -> torch.Tensor:
        """vᵀJ as a flat tensor of length n.

        Parameters
        ----------
        v : tensor, list or None
            One weight per output component, flat or shaped like ``f(x)``; None uses the
            widget's current ``v``.
        method : {"matmul", "backward"}
            ``"matmul"`` multiplies with :attr:`J`; ``"backward"`` calls ``y.backward(v)``
            on fresh leaves and reads their ``.grad``.

        Raises
        ------
        TypeError
            ``v`` is not numbers (e.g. a string).
        ValueError
            ``v`` has the wrong number of entries, or nan/inf.
        """
        vec = self._vector(self.v if v is None else v)
        if method == "matmul":
            return vec @ self._J
        if method == "backward":
            return vjp_backward(self.f, self._leaves, vec)
        raise ValueError(f"method must be 'matmul' or 'backward', got {method!r}.")

    def split(self, flat: torch.Tensor) -> torch.Tensor | Inputs:
        """Reshape a length-n vector (a row of J, vᵀJ, grad) into x's shapes."""
        parts, start = [], 0
        for t in self._leaves:
            parts.append(flat[start : start + t.numel()].reshape(t.shape))
            start += t.numel()
        return tuple(parts) if self._is_tuple else parts[0]

    def backward(self, v: Any = None, times: int = 1) -> None:
        """Call ``y.backward(v)`` ``times`` times without zeroing: ``.grad`` accumulates."""
        vec = self._vector(self.v if v is None else v)
        for _ in range(times):
            self._y.backward(
                vec.reshape(self._y.shape).to(self._y.dtype),
                retain_graph=True,
                inputs=list(self._leaves),
            )
            self._calls += 1
        self._send_vjp()

    def zero_grad(self) -> None:
        """Clear the leaves' ``.grad`` (like ``optimizer.zero_grad()``)."""
        for t in self._leaves:
            t.grad = None
        self._calls = 0
        self._send_vjp()

    def __repr__(self) -> str:
        m, n = self._J.shape
        ins = ", ".join(
            f"{name} {tuple(s)}" for name, s in zip(self.in_names, self.in_shapes, strict=True)
        )
        why = f" ({self.fallback_reason})" if self.fallback_reason else ""
        return (
            f"<gradwidget.JacobianWidget: J {m}×{n}, {self.out_name} {tuple(self.out_shape)} "
            f"← {ins}, method={self.method}{why}>"
        )

    # ---------------------------------------------------------------- static output

    def plot(self, ax: Any = None, *, show_vjp: bool = True, cmap: str = "RdBu_r"):
        """Draw J (and vᵀJ for the current v) with matplotlib; return the figure.

        Uses the same block summary as the browser. ``ax`` draws the heatmap into an
        existing axes (then vᵀJ is not drawn).
        """
        Figure = _pyplot_figure()
        from matplotlib.ticker import MaxNLocator

        values = torch.frombuffer(bytearray(self.heat["data"]), dtype=torch.float32)
        values = values.reshape(self.heat["shape"]).numpy()
        rb, cb = self.blocks
        if ax is None:
            fig = Figure(figsize=(6.4, 5.2 if show_vjp else 4.4), layout="constrained")
            if show_vjp:
                ax, ax_v = fig.subplots(2, 1, height_ratios=[4, 1], sharex=True)
            else:
                ax, ax_v = fig.subplots(), None
            if not hasattr(fig, "_repr_png_"):
                fig._repr_png_ = lambda: _png(fig)  # display without pyplot's inline hook
        else:
            fig, ax_v = ax.figure, None
        vmax = self.vmax or 1.0
        rows, cols = values.shape
        # Axes in real flat indices, whatever the block summary.
        im = ax.imshow(
            values,
            cmap=cmap,
            vmin=-vmax,
            vmax=vmax,
            aspect="auto",
            interpolation="nearest",
            extent=(-0.5, cols * cb - 0.5, rows * rb - 0.5, -0.5),
        )
        fig.colorbar(im, ax=ax, label=f"∂{self.out_name}ᵢ/∂xⱼ")
        centers, labels, start = [], [], 0
        for name, shape in zip(self.in_names, self.in_shapes, strict=True):
            size = math.prod(shape)
            if start:
                ax.axvline(start - 0.5, color="k", lw=0.8)
            centers.append(start + size / 2 - 0.5)
            labels.append(f"{name} {tuple(shape)}")
            start += size
        top = ax.secondary_xaxis("top")
        top.set_xticks(centers, labels)
        top.tick_params(length=0)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{self.out_name} {tuple(self.out_shape)}, flat index")
        title = self.title or f"Jacobian ({self.method})"
        note = "\n".join(textwrap.wrap(self.note, 70))
        ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
        if ax_v is None:
            ax.set_xlabel("input flat index")
            return fig
        view = self._vjp_arrays()
        xs = torch.arange(cols).numpy() * cb + (cb - 1) / 2
        if cols <= 64:
            ax_v.bar(xs, view["matmul"], width=0.8 * cb, color="#4393c3", label="v @ J")
            ax_v.plot(xs, view["backward"], "k.", ms=4, label="y.backward(v)")
        else:
            ax_v.plot(xs, view["matmul"], color="#4393c3", lw=2, label="v @ J")
            ax_v.plot(xs, view["backward"], "k--", lw=0.8, label="y.backward(v)")
        ax_v.axhline(0, color="0.5", lw=0.5)
        ax_v.set_ylabel("vᵀJ")
        ax_v.legend(fontsize=7, framealpha=0.8)
        per = f" ({self.reduce} of {cb} per point)" if cb > 1 else ""
        ax_v.set_xlabel(f"input flat index{per}")
        return fig

    def save(self, path: str | Path, **kw: Any) -> Path:
        """Write the :meth:`plot` figure to ``path`` (format from the suffix: .png, .svg, .pdf)."""
        path = Path(path)
        self.plot(**kw).savefig(path, dpi=120)
        return path

    def to_image(self, format: str = "png", **kw: Any):
        """The :meth:`plot` figure as an IPython ``Image`` (png) or ``SVG`` display object.

        For notebooks shown where widgets do not render (GitHub, nbviewer, nbconvert).
        """
        from IPython.display import SVG, Image

        fig = self.plot(**kw)
        if format == "png":
            return Image(data=_png(fig))
        if format == "svg":
            import io

            buf = io.StringIO()
            fig.savefig(buf, format="svg")
            return SVG(data=buf.getvalue())
        raise ValueError(f"format must be 'png' or 'svg', got {format!r}.")

    # ---------------------------------------------------------------- wiring

    def _note(self, blocks: tuple[int, int], reduce: str, fallback_reason: str = "") -> str:
        notes = [f"Not computed with jacrev: {fallback_reason}."] if fallback_reason else []
        rb, cb = blocks
        if rb > 1 or cb > 1:
            m, n = self._J.shape
            how = "block means" if reduce == "mean" else "largest-magnitude entries"
            notes.append(
                f"J is {m:,} × {n:,} ({m * n:,} entries): showing {math.ceil(m / rb):,} × "
                f"{math.ceil(n / cb):,} {how} of {rb} × {cb} blocks."
            )
        return " ".join(notes)

    def _vector(self, v: Any) -> torch.Tensor:
        return _as_vector(v, self._J.shape[0], self._J, self._y.shape)

    @traitlets.validate("v")
    def _check_v(self, proposal: dict) -> list[float]:
        try:
            return self._vector(proposal["value"]).tolist()
        except (TypeError, ValueError) as err:
            raise traitlets.TraitError(str(err)) from err

    @traitlets.observe("v", "accumulate")
    def _on_v(self, change: dict) -> None:
        # Off: x.grad is exactly this v's vᵀJ. On: two more calls pile onto .grad.
        if not self.accumulate:
            for t in self._leaves:
                t.grad = None
            self._calls = 0
        self.backward(times=2 if self.accumulate else 1)

    def _on_msg(self, _widget: Any, content: dict, _buffers: Any) -> None:
        event = content.get("event") if isinstance(content, dict) else None
        if event == "zero_grad":
            self.zero_grad()
        elif event == "backward":
            self.backward()

    def _vjp_arrays(self) -> dict[str, Any]:
        _, cb = self.blocks
        matmul = self.vjp(method="matmul")
        back = self.vjp(method="backward")
        grad = self.grad
        agree, diff = close(matmul, back)
        # How x.grad relates to vᵀJ: equal, a multiple (accumulated), or a mix of several v.
        ratio, proportional = None, False
        if not close(matmul, torch.zeros_like(matmul))[0]:
            m64 = matmul.double()
            ratio = float((grad.double() * m64).sum() / m64.pow(2).sum())
            proportional = close(grad, ratio * matmul)[0]
        return {
            "matmul": reduce_blocks(matmul[None], 1, cb, self.reduce)[0].numpy(),
            "backward": reduce_blocks(back[None], 1, cb, self.reduce)[0].numpy(),
            "grad": reduce_blocks(grad[None], 1, cb, self.reduce)[0].numpy(),
            "agree": agree,
            "max_diff": diff,
            "calls": self._calls,
            "ratio": ratio if proportional else None,
        }

    def _send_vjp(self) -> None:
        view = self._vjp_arrays()
        for key in ("matmul", "backward", "grad"):
            view[key] = float32_array(view[key])
        self.vjp_view = view


def _png(fig: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def jacobian(f: Callable[..., Any], x: Any, **kw: Any) -> JacobianWidget:
    """Explore the Jacobian of ``f`` at ``x``: heatmap, vᵀJ two ways, gradient accumulation.

    Parameters
    ----------
    f : callable
        ``f(x)`` (or ``f(*x)`` for a tuple ``x``) returning one floating-point tensor.
    x : tensor or tuple of tensors
        Where to evaluate J. Copied; the copies require grad (see ``widget.x``).
    method : {"auto", "jacrev", "autograd"}, optional
        How J is computed: :func:`torch.func.jacrev`, falling back to
        :func:`torch.autograd.functional.jacobian` where jacrev cannot run.
    v : tensor or list, optional
        Initial vector for vᵀJ (default all ones, i.e. the gradient of ``y.sum()``).
    reduce : {"mean", "absmax"}, optional
        How a J larger than ``max_cells`` per axis is summarised for display.
    max_cells : int, optional
        Heatmap cells per axis sent to the browser (default 512).
    max_entries : int, optional
        Refuse J with more entries than this (default 25 million).
    memory_budget : int, optional
        Bytes one vmapped jacrev batch may use (default 1 GiB); a Jacobian whose
        intermediates need more is computed in chunks of rows.
    max_seconds : float or None, optional
        Refuse, before computing, a J whose m backward passes are estimated (from one
        timed forward and backward pass of f) to take longer than this (default 30;
        None: no limit).
    input_names, output_name : optional
        Axis labels; inputs default to f's parameter names.

    Returns
    -------
    JacobianWidget
        Displays as the interactive explorer; ``.J``, ``.vjp(v)``, ``.plot()`` work headless.

    Examples
    --------
    >>> w = gradwidget.jacobian(lambda x: torch.softmax(x, 0), torch.randn(4))  # doctest: +SKIP
    >>> w.J.shape
    torch.Size([4, 4])
    """
    return JacobianWidget(f, x, **kw)
