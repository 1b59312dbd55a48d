"""Jacobian explorer widget: J of ``f`` at ``x``, vᵀJ two ways, gradient accumulation.

The math lives in :mod:`._jacobian_math` and needs no widget; :class:`JacobianWidget` wires it
to the browser (``js/src/jacobian.js``) and, through :mod:`._jacobian_plot`, to matplotlib.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anywidget
import torch
import traitlets

from ._constants import STATIC
from ._jacobian_math import (
    JACREV_MEMORY,
    MAX_SECONDS,
    Inputs,
    as_leaves,
    as_vector,
    close,
    flat_grad,
    forward,
    jacobian_matrix,
    reduce_blocks,
    summarize,
    vjp_backward,
)
from ._wire import float32_array

#: Largest number of heatmap cells per axis sent to the browser; bigger J is block-summarised.
MAX_CELLS_PER_AXIS = 512
#: J larger than this is refused (it would not fit comfortably in memory).
MAX_ENTRIES = 25_000_000
#: Outputs up to this count get one slider each for v.
MAX_SLIDERS = 24


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
        return flat_grad(self._leaves)

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
        from ._jacobian_plot import plot

        return plot(self, ax, show_vjp=show_vjp, cmap=cmap)

    def save(self, path: str | Path, **kw: Any) -> Path:
        """Write the :meth:`plot` figure to ``path`` (format from the suffix: .png, .svg, .pdf)."""
        from ._jacobian_plot import save

        return save(self.plot(**kw), path)

    def to_image(self, format: str = "png", **kw: Any):
        """The :meth:`plot` figure as an IPython ``Image`` (png) or ``SVG`` display object.

        For notebooks shown where widgets do not render (GitHub, nbviewer, nbconvert).
        """
        from ._jacobian_plot import to_image

        return to_image(self.plot(**kw), format)

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
        return as_vector(v, self._J.shape[0], self._J, self._y.shape)

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
