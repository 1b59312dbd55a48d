"""How a Trainer shows its runs: the publisher and run-hook interfaces, throttled updates."""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from ._optim import schedule_curve, suggest_lr
from ._run import Active
from ._wire import float_bytes, run_points, run_summary

#: Seconds between flushes of loss points / progress / output to the browser.
FLUSH_INTERVAL = 0.15
#: Seconds between run-table updates during a run (it carries every run's summary).
RUN_INFO_INTERVAL = 1.0
#: Longest schedule preview, in steps.
PREVIEW_STEPS = 20_000


class Publisher(Protocol):
    """Where a Trainer reads its settings and shows its runs (a widget's training part)."""

    def settings(self) -> dict[str, Any]:
        """Keys ``lr``, ``optimizer``, ``optimizer_settings``, ``schedule``, ``total_steps``,
        ``live``."""

    def set_total_steps(self, steps: int) -> None: ...
    def show_state(self, state: str) -> None: ...
    def show_progress(self, progress: dict[str, Any]) -> None: ...
    def show_runs(self, summaries: list[dict[str, Any]]) -> None: ...
    def show_points(self, content: dict[str, Any], buffers: list[bytes]) -> None: ...
    def show_output(self, entries: list[dict[str, Any]]) -> None: ...
    def show_lr_find(self, plot: dict[str, Any]) -> None: ...
    def show_preview(self, lrs: bytes) -> None: ...


class RunHooks(Protocol):
    """Told about run boundaries (the live-gradient watcher); must not raise into a run."""

    def begin_run(self) -> None: ...
    def sample_next(self) -> None: ...
    def end_run(self) -> None: ...

    def manual(self) -> dict[str, Any] | None:
        """While a loop of the user's own is watched: ``{"lr", "optimizer"}`` of the
        optimizer seen stepping (values may be None), so ``log()`` can record a "manual"
        run; None when nothing is watched."""


class Reporter:
    """Sends a Trainer's progress to its publisher, at most every ``FLUSH_INTERVAL``."""

    def __init__(self, publisher: Publisher):
        self.pub = publisher
        self._runs_published = 0.0
        self._all_runs: list[dict[str, Any]] = []

    def flush(self, a: Active, force: bool = False) -> bool:
        """New loss points and progress of run ``a``; False when it is too soon."""
        now = time.monotonic()
        if not force and now - a.last_flush < FLUSH_INTERVAL:
            return False
        a.last_flush = now
        run = a.run
        losses, lrs = run["losses"], run["lrs"]
        nl, nr = len(losses), len(lrs)
        if a.kind == "train" and (nl > a.loss_sent or nr > a.lr_sent):
            content, buffers = run_points(
                run["id"], a.loss_sent, losses[a.loss_sent : nl], a.lr_sent, lrs[a.lr_sent : nr]
            )
            self.pub.show_points(content, buffers)
            a.loss_sent, a.lr_sent = nl, nr
        rate = a.step / max(now - a.started, 1e-9)
        self.pub.show_progress(
            {
                "run": run["id"],
                "kind": a.kind,
                "step": a.step,
                "total": a.total,
                "rate": rate,
                "eta": (a.total - a.step) / rate if rate > 0 else None,
                "loss": losses[-1] if losses and math.isfinite(losses[-1]) else None,
                "status": run["status"],
                # Running in the cell that called it: the kernel takes no messages until it
                # ends, so the widget's stop interrupts the kernel instead.
                "in_cell": a.sync,
            }
        )
        if now - self._runs_published >= RUN_INFO_INTERVAL:  # the legend's running loss
            self.runs(list(self._all_runs))
        return True

    def runs(self, runs: list[dict[str, Any]]) -> None:
        """The run table (every run's summary); ``runs`` is the Trainer's live list."""
        self._all_runs = runs
        self._runs_published = time.monotonic()
        self.pub.show_runs([run_summary(r) for r in runs])

    def history(self, runs: list[dict[str, Any]]) -> None:
        """Every run's points (a view that just rendered asks for them)."""
        for run in runs:
            self.pub.show_points(*run_points(run["id"], 0, run["losses"], 0, run["lrs"]))

    def lr_find(self, run: dict[str, Any]) -> dict[str, Any]:
        """Show an lr range test's curve and suggestion; returns ``lr_find()``'s result."""
        losses = list(run["losses"])
        lrs = list(run["lrs"][: len(losses)])
        suggestion = suggest_lr(lrs, losses)
        self.pub.show_lr_find(
            {
                "lrs": float_bytes(lrs),
                "losses": float_bytes(losses),
                "suggestion": suggestion,
                "status": run["status"] if run["status"] != "running" else "done",
                "error": run["error"],
            }
        )
        return {"lrs": lrs, "losses": losses, "suggestion": suggestion}

    def preview(self, settings: dict[str, Any]) -> None:
        """The learning rate of each step the given settings would give."""
        try:
            steps = min(int(settings["total_steps"]), PREVIEW_STEPS)
            curve = schedule_curve(
                settings["schedule"], settings["lr"], steps, settings["optimizer"]
            )
        except ValueError:
            curve = []
        self.pub.show_preview(float_bytes(curve))
