"""Training runs: bind a training body, run it from a snapshot, rerun it when settings change.

A :class:`Trainer` knows nothing of widgets. It reads its settings from, and reports to, a
:class:`Publisher`, and tells :class:`RunHooks` when runs begin and end (the live-gradient
watcher). The user binds a training *body* (a ``%%train`` cell or a ``step_fn``); the first run
is synchronous in the calling cell, later changes of the settings rerun the body from the same
snapshot in a single worker thread so the kernel stays free to receive further slider moves.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from ._loop import MAX_RUNS, LoopHelpers
from ._optim import lr_sweep, make_optimizer, make_scheduler
from ._output import OutputBuffer, route_thread
from ._report import Publisher, Reporter, RunHooks
from ._run import Active, Stop, copy_run, failed, new_run
from ._snapshot import Snapshot

#: A change waits this long for further changes before its rerun starts.
DEBOUNCE = 0.05

Body = Callable[[torch.optim.Optimizer, Any, float], None]


class Trainer(LoopHelpers):
    """Runs a bound training body; see the module docstring.

    Parameters
    ----------
    module : nn.Module or None
        The model whose parameters are trained and snapshotted (None: runs are refused).
    publisher : Publisher
    hooks : RunHooks, optional
    """

    def __init__(
        self, module: torch.nn.Module | None, publisher: Publisher, hooks: RunHooks | None = None
    ):
        self._module = module
        self.pub = publisher
        self.hooks = hooks
        self._cond = threading.Condition(threading.RLock())
        self._body: Body | None = None
        self._seed: int | None = None
        self._snapshot: Snapshot | None = None
        self._runs: list[dict[str, Any]] = []
        self._next_id = 1
        self._active: Active | None = None
        self._pending: str | None = None  # "train" / "lr_find" rerun waiting for the worker
        self._pending_at = 0.0
        self._pending_kw: dict[str, Any] = {}
        self._worker: threading.Thread | None = None
        self._paused = False
        self._step_budget = 0
        self.output = OutputBuffer(publisher.show_output)
        self.report = Reporter(publisher)
        self._manual: Active | None = None  # the "manual" run of a watched loop of the user's
        self.lr_find_result: dict[str, Any] | None = None
        self._quiet = False

    # -- binding and synchronous runs --

    @property
    def module(self) -> torch.nn.Module:
        if self._module is None:
            raise ValueError(
                "Training controls need the model: build the widget from the module, "
                "e.g. GradWidget(model, example_input=x)."
            )
        return self._module

    def bind(self, body: Body, *, steps: int | None = None, seed: int | None = None) -> None:
        """Bind the training body, take the snapshot if none yet, run it once synchronously."""
        __tracebackhide__ = True
        module = self.module
        if threading.get_ident() == getattr(self._active, "thread", None):
            raise RuntimeError("train() cannot be called from inside a training run.")
        self.stop()
        self.wait()
        if steps is not None:
            self._quiet = True  # the cell's own step count is not a change to rerun for
            try:
                self.pub.set_total_steps(int(steps))
            finally:
                self._quiet = False
        self._body = body
        self._seed = seed
        if self._snapshot is None:
            self._snapshot = Snapshot(module)
        self._run("train", sync=True)

    def train_fn(self, step_fn: Callable[[torch.optim.Optimizer], Any], **kw: Any) -> None:
        """Bind a plain step function: ``step_fn(opt)`` does one step and returns the loss."""
        __tracebackhide__ = True
        if not callable(step_fn):
            raise TypeError(f"train() needs a function step_fn(opt); got {type(step_fn).__name__}.")

        def body(opt: torch.optim.Optimizer, sched: Any, lr: float) -> None:
            __tracebackhide__ = True
            for _ in self.steps():
                loss = step_fn(opt)
                if loss is not None:
                    self.log(loss=loss)

        self.bind(body, **kw)

    def _run(self, kind: str, *, sync: bool, **kw: Any) -> None:
        __tracebackhide__ = True
        body = self._body
        self.end_manual()
        if body is None:
            self.message("Nothing to run yet: run a %%train cell or call train(step_fn) first.")
            return
        module = self.module
        s = self.pub.settings()
        lr, name, settings = float(s["lr"]), s["optimizer"], dict(s["optimizer_settings"])
        schedule = s["schedule"]
        total = int(kw.get("steps") or s["total_steps"])
        label = schedule if kind == "train" else "lr_find"
        run = new_run(lr, name, settings, label, total, self._seed)
        a = Active(run, total, kind, sync)
        with self._cond:
            # Never two runs at once: a synchronous run waits for the worker's to end.
            self._cond.wait_for(lambda: self._active is None)
            run["id"] = self._next_id
            self._next_id += 1
            self._active = a
            if kind == "train":
                self._runs.append(run)
                del self._runs[:-MAX_RUNS]
            if kw.get("paused"):
                self._paused, self._step_budget = True, 1
        self.output.clear()
        self._set_state()
        self._publish_runs()
        try:
            self._snapshot.restore(module, self._seed)  # type: ignore[union-attr]
            if kind == "lr_find":
                a.sweep = lr_sweep(kw["start"], kw["end"], total)
                lr = a.sweep[0]
            a.opt = make_optimizer(name, module.parameters(), lr, settings)
            a.sched = make_scheduler(schedule, a.opt, total) if kind == "train" else None
            if a.live_lr is not None:
                self._retune(a)
            self._hook("begin_run")
            body(a.opt, a.sched, lr)
            run["status"] = "done"
        except Stop as stop:
            run["status"] = stop.status if stop.status != "found" else "done"
            run["note"] = run["note"] or stop.note
            if stop.status == "diverged":  # to the cell (sync) or the widget's output (worker)
                print(f"Run #{run['id']}: {run['error']}", file=sys.stderr)
        except KeyboardInterrupt:
            run["status"] = "stopped"
            run["note"] = "interrupted"
            raise
        except BaseException as exc:
            self.output.append(failed(run, exc))
            if sync:
                raise
        finally:
            self._hook("end_run")
            if kind == "lr_find":
                self._finish_lr_find(a)
            a.opt = a.sched = None
            with self._cond:
                self._active = None
                self._paused, self._step_budget = False, 0
                self._cond.notify_all()
            self._flush(a, force=True)
            self.output.flush(force=True)
            self._set_state()
            self._publish_runs()

    # -- control (any thread) --

    def request(self, kind: str = "train", **kw: Any) -> None:
        """Schedule a rerun in the worker; a run in flight is cancelled (debounced)."""
        with self._cond:
            if self._body is None:
                return
            self._pending = kind
            self._pending_kw = kw
            self._pending_at = time.monotonic()
            a = self._active
            if a is not None and a.cancel is None:
                a.cancel, a.cancel_note = "stopped", "replaced by a newer run"
            if not kw.get("paused"):
                self._paused = False
            self._cond.notify_all()
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._worker_loop, name="gradwidget-train", daemon=True
                )
                self._worker.start()
        self._set_state()

    def on_settings_change(self, name: str) -> None:
        """A setting changed (from Python or the UI): rerun, or in live mode retune in place."""
        self.publish_preview()
        if self._quiet:
            return
        s = self.pub.settings()
        if name == "lr" and s.get("live"):
            a = self._active
            if a is not None and a.kind == "train" and a.cancel is None:
                # A run still starting has no optimizer yet: it takes the lr when it makes one.
                a.live_lr = float(s["lr"])
                if a.opt is not None:
                    self._retune(a)
                a.run["note"] = "lr changed live during the run"
                return
        self.request("train")

    @staticmethod
    def _retune(a: Active) -> None:
        """Live mode: the run in flight steps with ``a.live_lr`` from now on."""
        lr = a.live_lr
        for g in a.opt.param_groups:  # type: ignore[union-attr]
            g["lr"] = lr
        if a.sched is not None:
            a.sched.base_lrs = [lr for _ in a.sched.base_lrs]

    def stop(self) -> None:
        """Stop the run in flight and drop any scheduled rerun (does not wait)."""
        with self._cond:
            self._pending = None
            a = self._active
            if a is not None and a.cancel is None:
                a.cancel = "stopped"
            self._paused, self._step_budget = False, 0
            self._cond.notify_all()
        self._set_state()

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()
        self._set_state()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()
        self._set_state()

    def single_step(self) -> None:
        """One step: of the paused run, or of a new run that then pauses."""
        with self._cond:
            if self._active is not None or self._pending:
                self._paused = True
                self._step_budget += 1
                self._cond.notify_all()
                self._set_state()
                return
        self.request("train", paused=True)

    def reset(self) -> None:
        """Stop, then put the model back to the snapshot."""
        self.stop()
        self.wait()
        if self._snapshot is not None:
            self._snapshot.restore(self.module, self._seed)

    def clear(self) -> None:
        """Forget finished runs (the one in flight stays)."""
        with self._cond:
            keep = self._active.run if self._active is not None else None
            self._runs = [r for r in self._runs if r is keep]
        self._publish_runs()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no run is in flight or scheduled; False on timeout."""
        if self._active is not None and self._active.thread == threading.get_ident():
            raise RuntimeError("wait() cannot be called from inside the training run.")
        with self._cond:
            return self._cond.wait_for(self.idle, timeout)

    def idle(self) -> bool:
        return self._worker is None and self._pending is None and self._active is None

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Copies of the run records (oldest first)."""
        with self._cond:
            return [copy_run(r) for r in self._runs]

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    # -- lr range test --

    def lr_find(self, steps: int = 100, start: float = 1e-6, end: float = 10.0, sync: bool = True):
        if not (0 < start < end) or steps < 2:
            raise ValueError("lr_find needs 0 < start < end and steps >= 2.")
        if self._body is None:
            raise RuntimeError(
                "lr_find() reruns your training: run a %%train cell or train() first."
            )
        if not sync:
            self.request("lr_find", steps=steps, start=start, end=end)
            return None
        self.stop()
        self.wait()
        self._run("lr_find", sync=True, steps=steps, start=start, end=end)
        return self.lr_find_result

    def _finish_lr_find(self, a: Active) -> None:
        self.lr_find_result = self.report.lr_find(a.run)
        self._snapshot.restore(self.module, self._seed)  # type: ignore[union-attr]

    # -- the worker --

    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._pending is None:
                        self._worker = None
                        self._cond.notify_all()
                        return
                    left = self._pending_at + DEBOUNCE - time.monotonic()
                    if self._active is None and left <= 0:
                        break
                    self._cond.wait(max(left, 0.01))
                kind, kw = self._pending, self._pending_kw
                self._pending, self._pending_kw = None, {}
            try:
                with route_thread(self.output.write):
                    self._run(kind, sync=False, **kw)
            except BaseException as exc:  # keep the worker alive; say what went wrong
                self.message(f"Could not start the run: {type(exc).__name__}: {exc}")

    # -- reporting --

    def _flush(self, a: Active, force: bool = False) -> None:
        if self.report.flush(a, force):
            self.output.flush()

    def send_history(self) -> None:
        """Send every run's points (a view that just rendered asks for them)."""
        self.report.history(self.runs)

    def _publish_runs(self) -> None:
        with self._cond:
            self.report.runs(self._runs)

    def publish_preview(self) -> None:
        """Show the learning rate of each step the current settings would give."""
        self.report.preview(self.pub.settings())

    def _set_state(self) -> None:
        with self._cond:
            if self._active is not None:
                state = "paused" if self._paused else "running"
            elif self._pending is not None:
                state = "scheduled"
            else:
                state = "idle"
        self.pub.show_state(state)

    def message(self, text: str) -> None:
        """A problem the user should see, in the run's output area."""
        self.output.message(text)

    def _hook(self, method: str) -> None:
        # Only run boundaries: the watcher's own clock finds the steps to sample.
        if self.hooks is None:
            return
        try:
            getattr(self.hooks, method)()
        except Exception as exc:  # the watcher must never break a run
            self.message(f"Live gradients: {method} failed: {type(exc).__name__}: {exc}")
