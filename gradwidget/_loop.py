"""The Trainer's loop helpers: what the user's training code calls (steps(), log()).

A mixin of :class:`gradwidget._train.Trainer` (which owns the state named here). ``steps()``
and ``log()`` run on the training thread, inside a run's body; ``log()`` in a watched loop of
the user's own (no run of ours in this thread) records a "manual" run instead.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

from ._run import Active, Stop, manual_run, scalar

#: Runs kept in the history (oldest dropped first).
MAX_RUNS = 100


class LoopHelpers:
    """``steps``, ``log`` and the pause/stop checkpoint between steps."""

    _active: Active | None
    _manual: Active | None
    _cond: Any
    _runs: list
    _next_id: int
    _paused: bool
    _step_budget: int
    hooks: Any

    def _current(self, what: str) -> Active:
        a = self._active
        if a is None or a.thread != threading.get_ident():
            where = " or in any loop while watching (w.watch())" if what == "log" else ""
            raise RuntimeError(
                f"w.{what}() is for the training loop: use it in a %%train cell "
                f"(%load_ext gradwidget), in the step function given to w.train(){where}."
            )
        return a

    def steps(self) -> Iterator[int]:
        """Yield step indices; honours pause/stop, advances the schedule, reports progress."""
        a = self._current("steps")
        opt = a.opt
        assert opt is not None
        for i in range(a.total):
            self._checkpoint(a)
            a.step = i
            if a.kind == "lr_find":
                for g in opt.param_groups:
                    g["lr"] = a.sweep[i]
            a.run["lrs"].append(float(opt.param_groups[0]["lr"]))
            if i == a.total - 1:
                self._hook("sample_next")  # the last step is always sampled
            yield i
            a.step = i + 1
            if a.sched is not None and i + 1 < a.total:
                a.sched.step()
            self._flush(a)

    def log(self, loss: Any = None, **metrics: Any) -> None:
        """Record this step's loss (a tensor or number) and any other scalar metrics."""
        a = self._active
        if a is None or a.thread != threading.get_ident():
            info = self.hooks.manual() if self.hooks is not None else None
            if info is not None:
                self._log_manual(info, loss, metrics)
                return
        a = self._current("log")
        if a.cancel is not None:  # loops that do not use steps() still stop here
            raise Stop(a.cancel, a.cancel_note)
        for key, value in metrics.items():
            a.run["metrics"].setdefault(key, []).append(scalar(value, key))
        if loss is not None:
            a.record_loss(scalar(loss, "loss"))

    def _log_manual(self, info: dict[str, Any], loss: Any, metrics: dict[str, Any]) -> None:
        """``log()`` in a watched loop of the user's own: a run named "manual"."""
        with self._cond:
            m = self._manual
        if m is None:
            m = self.begin_manual(info, watched=True)
        self._log_into(m, info.get("lr"), loss, metrics)

    def begin_manual(
        self,
        info: dict[str, Any],
        *,
        total: int | None = None,
        note: str | None = None,
        watched: bool = False,
    ) -> Active:
        """Start a run of a loop that is not ours (a watched loop, a framework's ``fit``).

        ``total`` steps, when known, give the progress bar its end; ``note`` says where the
        run comes from; a ``watched`` run (``log()`` in a watched loop) ends with its watch.
        Any earlier such run ends first.
        """
        self.end_manual()
        m = Active(manual_run(info), total or 0, "train", sync=True)
        m.fixed_total = total is not None
        m.watched = watched
        m.run["note"] = note
        with self._cond:
            m.run["id"] = self._next_id
            self._next_id += 1
            self._manual = m
            self._runs.append(m.run)
            del self._runs[:-MAX_RUNS]
        self._publish_runs()
        return m

    def log_manual(
        self,
        loss: Any = None,
        *,
        step: int | None = None,
        lr: float | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        """Record a step of the run :meth:`begin_manual` started (no-op when none is).

        ``step``: the framework's own step count, when its logs skip steps.
        """
        with self._cond:
            m = self._manual
        if m is not None:
            self._log_into(m, lr, loss, metrics or {}, step)

    def _log_into(
        self, m: Active, lr: Any, loss: Any, metrics: dict[str, Any], step: int | None = None
    ) -> None:
        total = m.total
        if m.log_manual(lr, loss, metrics):
            print(f"Run #{m.run['id']}: {m.run['error']}", file=sys.stderr)
            self._publish_runs()
        if step is not None:
            m.step = int(step)
        if m.fixed_total:
            m.total = m.run["steps"] = max(total, m.step)
        self._flush(m)

    def end_manual(
        self, status: str = "done", note: str | None = None, *, watched_only: bool = False
    ) -> None:
        """The run of a loop not ours is over: close it (``status`` unless it diverged).

        ``watched_only``: only a run that ends with its watch (the watch just ended).
        """
        with self._cond:
            m = self._manual
            if m is None or (watched_only and not m.watched):
                return
            self._manual = None
        if m.run["status"] == "running":
            m.run["status"] = status
        if note:
            m.run["note"] = note if not m.run["note"] else f"{m.run['note']}; {note}"
        self._flush(m, force=True)
        self._publish_runs()

    def _checkpoint(self, a: Active) -> None:
        """Between steps: stop if asked, wait while paused (single steps pass one at a time)."""
        with self._cond:
            while True:
                if a.cancel is not None:
                    raise Stop(a.cancel, a.cancel_note)
                if not self._paused:
                    return
                if self._step_budget > 0:
                    self._step_budget -= 1
                    return
                self._flush(a, force=True)
                self._cond.wait(0.1)
