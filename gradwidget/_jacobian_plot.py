"""Matplotlib drawing of a :class:`~._jacobian.JacobianWidget`: its heatmap and vᵀJ strip.

matplotlib is an optional extra, so the widget imports this module only when a figure is
asked for, and matplotlib itself is imported per call: a missing install surfaces as the
install hint from the call that needs it.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ._jacobian import JacobianWidget


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # optional dependency
        raise ImportError(
            "plot() and static export need matplotlib: pip install matplotlib "
            "(or pip install 'gradwidget[plot]')."
        ) from err
    return Figure


def plot(w: JacobianWidget, ax: Any = None, *, show_vjp: bool = True, cmap: str = "RdBu_r"):
    """Draw ``w``'s J (and vᵀJ for its current v); see :meth:`JacobianWidget.plot`."""
    Figure = _figure_class()
    from matplotlib.ticker import MaxNLocator

    values = torch.frombuffer(bytearray(w.heat["data"]), dtype=torch.float32)
    values = values.reshape(w.heat["shape"]).numpy()
    rb, cb = w.blocks
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
    vmax = w.vmax or 1.0
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
    fig.colorbar(im, ax=ax, label=f"∂{w.out_name}ᵢ/∂xⱼ")
    centers, labels, start = [], [], 0
    for name, shape in zip(w.in_names, w.in_shapes, strict=True):
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
    ax.set_ylabel(f"{w.out_name} {tuple(w.out_shape)}, flat index")
    title = w.title or f"Jacobian ({w.method})"
    note = "\n".join(textwrap.wrap(w.note, 70))
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    if ax_v is None:
        ax.set_xlabel("input flat index")
        return fig
    view = w._vjp_arrays()  # the same summary the browser's vᵀJ strip gets
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
    per = f" ({w.reduce} of {cb} per point)" if cb > 1 else ""
    ax_v.set_xlabel(f"input flat index{per}")
    return fig


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: .png, .svg, .pdf)."""
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def to_image(fig: Any, format: str = "png"):
    """``fig`` as an IPython ``Image`` (png) or ``SVG`` display object."""
    from IPython.display import SVG, Image

    if format == "png":
        return Image(data=_png(fig))
    if format == "svg":
        return SVG(data=_savefig(fig, "svg").decode())
    raise ValueError(f"format must be 'png' or 'svg', got {format!r}.")


def _png(fig: Any) -> bytes:
    return _savefig(fig, "png", dpi=100)


def _savefig(fig: Any, format: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=format, **kw)
    return buf.getvalue()
