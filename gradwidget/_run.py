"""One training run: its record, its state while in flight, and how it ends."""

from __future__ import annotations

import math
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from ._optim import optimizer_settings

#: Divergence: a loss above this multiple of the first loss stops the run.
DIVERGENCE_FACTOR = 1000.0


class Stop(BaseException):
    """Ends a run from inside the user's loop (a BaseException so ``except Exception`` in
    training code does not swallow it)."""

    def __init__(self, status: str, note: str | None = None):
        super().__init__(status)
        self.status = status
        self.note = note


def new_run(
    lr: float, optimizer: str, settings: dict, schedule: str, steps: int, seed: int | None
) -> dict[str, Any]:
    """The record of a run (what ``GradWidget.runs`` lists), before its first step."""
    return {
        "id": 0,
        "lr": lr,
        "optimizer": optimizer,
        "schedule": schedule,
        "settings": optimizer_settings(optimizer, settings) if schedule != "manual" else {},
        "steps": steps,
        "seed": seed,
        "status": "running",
        "error": None,
        "traceback": None,
        "note": None,
        "losses": [],
        "lrs": [],
        "metrics": {},
    }


def manual_run(info: dict[str, Any]) -> dict[str, Any]:
    """The record of a "manual" run: a watched loop of the user's own calling ``log()``."""
    lr = info.get("lr")
    lr = math.nan if lr is None else float(lr)
    return new_run(lr, info.get("optimizer") or "manual", {}, "manual", 0, None)


def copy_run(run: dict[str, Any]) -> dict[str, Any]:
    """A copy whose lists the caller may keep while the run goes on."""
    c = dict(run)
    c["losses"], c["lrs"] = list(run["losses"]), list(run["lrs"])
    c["metrics"] = {k: list(v) for k, v in run["metrics"].items()}
    c["settings"] = dict(run["settings"])
    return c


class Active:
    """State of the run in flight."""

    def __init__(self, run: dict[str, Any], total: int, kind: str, sync: bool):
        self.run = run
        self.total = total
        self.kind = kind  # "train" or "lr_find"
        self.sync = sync
        self.thread = threading.get_ident()
        self.cancel: str | None = None  # status to stop with, set from any thread
        self.cancel_note: str | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.sched: Any = None
        self.step = 0
        self.started = time.monotonic()
        self.last_flush = 0.0
        self.loss_sent = 0
        self.lr_sent = 0
        self.best = math.inf
        self.sweep: list[float] = []
        self.live_lr: float | None = None  # an lr set live while the run was in flight
        self.fixed_total = False  # a manual run whose length its framework told us
        self.watched = False  # a manual run that ends with the watch that started it

    def log_manual(self, lr: float | None, loss: Any, metrics: dict[str, Any]) -> bool:
        """A ``log()`` of a manual run; True when it just diverged (marked, never raised:
        the loop is the user's)."""
        values = {k: scalar(v, k) for k, v in metrics.items()}
        run = self.run
        if lr is not None:
            run["lrs"].append(float(lr))
        for key, v in values.items():
            run["metrics"].setdefault(key, []).append(v)
        diverged = False
        if loss is not None:
            value = scalar(loss, "loss")
            if run["status"] != "running":
                run["losses"].append(value)
            else:
                try:
                    self.record_loss(value)
                except Stop as stop:
                    run["status"], run["note"], diverged = stop.status, stop.note, True
        self.step = self.total = run["steps"] = len(run["losses"])
        return diverged

    def record_loss(self, value: float) -> None:
        """Append this step's loss; raise :class:`Stop` when the run must end here."""
        run = self.run
        losses = run["losses"]
        losses.append(value)
        if self.kind == "lr_find":
            if not math.isfinite(value) or value > 4 * self.best:
                raise Stop("found", "loss rose above 4x its best")
            self.best = min(self.best, value)
            return
        first = losses[0]
        if not math.isfinite(value) or (
            math.isfinite(first) and first > 0 and value > DIVERGENCE_FACTOR * first
        ):
            what = f"became {value}" if not math.isfinite(value) else "grew over 1000x"
            run["error"] = (
                f"Diverged at step {len(losses) - 1}: the loss {what}. The learning rate "
                f"{run['lr']:g} is likely too large; try a smaller one."
            )
            raise Stop("diverged", run["error"])


def scalar(value: Any, name: str) -> float:
    """A logged value as a float; errors name what ``log()`` accepts."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"log({name}=...) needs a scalar; got a tensor of shape "
                f"{tuple(value.shape)} (reduce it, e.g. .mean())."
            )
        return float(value.detach())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"log({name}=...) needs a number or a 1-element tensor; got {type(value).__name__}."
        ) from None


def failed(run: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """Mark ``run`` as ended by ``exc``; returns the error entry for the output area."""
    run["status"] = "error"
    run["error"] = f"{type(exc).__name__}: {exc}"
    run["traceback"] = user_traceback(exc)
    return {
        "output_type": "error",
        "ename": type(exc).__name__,
        "evalue": str(exc),
        "traceback": run["traceback"].splitlines(),
    }


def user_traceback(exc: BaseException) -> str:
    """The traceback without this package's own frames above the user's code."""
    tb = exc.__traceback__
    package = str(Path(__file__).parent)
    while tb is not None and tb.tb_next is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(package):
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
