"""Reference monitors ("anchors") the live-gradient benchmarks compare against.

Each function instruments a model the way a user of that tool would and returns an
:class:`Anchor` whose ``remove()`` undoes it; ``anchor.events`` counts the histograms made.

* :func:`tensorboard_histograms`: TensorBoard's ``SummaryWriter.add_histogram`` of every
  parameter's gradient every ``every`` optimizer steps (written to a temporary directory).
  It runs in a global optimizer step pre-hook, i.e. where a training loop would call it
  (after ``backward()``, before ``step()``), for optimizers that hold the model's parameters.
* :func:`wandb_style_hooks`: what ``wandb.watch(model, log="gradients", log_freq=...)`` does,
  without wandb: a tensor hook per parameter (``Tensor.register_hook``) with its own call
  counter; on every ``log_freq``-th call the gradient is flattened, its min and max read with
  ``.item()``, binned with ``torch.histc`` (64 bins) between them, and the counts and the bin
  edges converted with ``.tolist()`` (wandb hands those to ``wandb.Histogram``; here they are
  kept as the last record).
"""

from __future__ import annotations

import math
import tempfile

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook


class Anchor:
    """A monitor attached to a model: ``remove()`` detaches it (idempotent)."""

    def __init__(self, name: str):
        self.name = name
        self.events = 0  # histograms computed so far
        self.last = None  # the last record (tool-specific)
        self._undo: list = []

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> Anchor:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def tensorboard_histograms(model: nn.Module, every: int = 10, logdir: str | None = None) -> Anchor:
    """``writer.add_histogram(name, p.grad, step)`` for every parameter every ``every`` steps.

    Steps are counted by a global optimizer step pre-hook (one per ``optimizer.step()`` of an
    optimizer holding any of the model's parameters); histograms are written on steps 0,
    ``every``, ``2 * every``, ... Writes to ``logdir`` or to a temporary directory that
    ``remove()`` deletes.
    """
    from torch.utils.tensorboard import SummaryWriter

    anchor = Anchor(f"TensorBoard add_histogram every {every} steps")
    tmp = None
    if logdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="anchor_tb_")
        logdir = tmp.name
    writer = SummaryWriter(logdir)
    named = list(model.named_parameters())
    ids = {id(p) for _, p in named}
    mine: dict[int, bool] = {}  # optimizer id -> holds some of the model's parameters
    state = {"step": 0}

    def pre_hook(optimizer, args, kwargs) -> None:
        key = id(optimizer)
        if key not in mine:
            mine[key] = any(id(p) in ids for g in optimizer.param_groups for p in g["params"])
        if not mine[key]:
            return
        step = state["step"]
        if step % every == 0:
            for name, p in named:
                if p.grad is not None:
                    writer.add_histogram(name, p.grad, step)
                    anchor.events += 1
            anchor.last = step
        state["step"] = step + 1

    handle = register_optimizer_step_pre_hook(pre_hook)
    anchor._undo.append(tmp.cleanup if tmp is not None else (lambda: None))
    anchor._undo.append(writer.close)
    anchor._undo.append(handle.remove)
    return anchor


def _histogram_record(name: str, grad: torch.Tensor, bins: int):
    """(name, counts, edges) as plain lists, or None when nothing finite is left."""
    flat = grad.detach().reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    lo, hi = flat.min().item(), flat.max().item()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        flat = flat[torch.isfinite(flat)]
        if flat.numel() == 0:
            return None
        lo, hi = flat.min().item(), flat.max().item()
    counts = torch.histc(flat, bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, steps=bins + 1)
    return name, counts.tolist(), edges.tolist()


def wandb_style_hooks(model: nn.Module, log_freq: int = 100, bins: int = 64) -> Anchor:
    """A ``wandb.watch``-style gradient histogram: one tensor hook per parameter.

    Each hook counts its own calls and on every ``log_freq``-th one computes a ``bins``-bin
    ``torch.histc`` of the gradient between its min and max (non-finite values dropped) and
    converts counts and edges to lists. The hook sees the gradient flowing into the
    parameter (before accumulation), as wandb's does.
    """
    anchor = Anchor(f"wandb.watch-style register_hook histogram every {log_freq} calls")
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        calls = [0]

        def hook(grad, name=name, calls=calls) -> None:
            calls[0] += 1
            if calls[0] < log_freq:
                return
            calls[0] = 0
            record = _histogram_record(name, grad, bins)
            if record is not None:
                anchor.last = record
                anchor.events += 1

        anchor._undo.append(p.register_hook(hook).remove)
    return anchor
