"""Training runs: snapshot/restore, optimizer and scheduler factory, worker, cancel, history.

One :class:`Trainer` belongs to one widget. The user binds a training *body* (a ``%%train`` cell
or a ``step_fn``); the first run is synchronous in the calling cell, later changes of the
settings rerun the body from the same snapshot in a single worker thread so the kernel stays
free to receive further slider moves.
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._output import route_thread
from ._wire import float_bytes, run_points, run_summary

# ---- optimizers and schedules -------------------------------------------------------------

#: Optimizer names (torch.optim class names) and the settings the UI shows for each, at
#: torch's defaults.
OPTIMIZER_SETTINGS: dict[str, dict[str, Any]] = {
    "SGD": {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "Adam": {"beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0},
    "AdamW": {"beta1": 0.9, "beta2": 0.999, "weight_decay": 0.01},
    "RMSprop": {"momentum": 0.0, "alpha": 0.99, "weight_decay": 0.0},
    "Adagrad": {"weight_decay": 0.0},
}
_OPT_BY_LOWER = {name.lower(): name for name in OPTIMIZER_SETTINGS}

#: Schedule names and what they mean (all built on ``torch.optim.lr_scheduler``).
SCHEDULES: dict[str, str] = {
    "constant": "constant learning rate",
    "step": "step decay: x0.1 every third of the run (StepLR)",
    "exponential": "exponential decay to 1/100 of lr at the end (ExponentialLR)",
    "cosine": "cosine annealing to 0 (CosineAnnealingLR)",
    "onecycle": "one-cycle: warm up to lr, anneal far below it (OneCycleLR)",
}
_SCHEDULE_ALIASES = {
    "none": "constant",
    "stepdecay": "step",
    "steplr": "step",
    "exp": "exponential",
    "exponentiallr": "exponential",
    "cosineannealing": "cosine",
    "cosineannealinglr": "cosine",
    "onecyclelr": "onecycle",
}

#: Divergence: a loss above this multiple of the first loss stops the run.
DIVERGENCE_FACTOR = 1000.0
#: Seconds between flushes of loss points / progress / output to the browser.
FLUSH_INTERVAL = 0.15
#: Seconds between run-table updates during a run (it carries every run's summary).
RUN_INFO_INTERVAL = 1.0
#: Seconds between output-area updates (each resends the list).
OUTPUT_INTERVAL = 0.1
#: A change waits this long for further changes before its rerun starts.
DEBOUNCE = 0.05
#: Runs kept in the history (oldest dropped first).
MAX_RUNS = 100
#: Entries kept in the output area.
MAX_OUTPUT_ENTRIES = 200
MAX_OUTPUT_CHARS = 20_000


def normalize_optimizer(name: str) -> str:
    """``"adam"`` -> ``"Adam"``; raises ValueError naming the choices."""
    canonical = _OPT_BY_LOWER.get(str(name).strip().lower())
    if canonical is None:
        raise ValueError(
            f"Unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZER_SETTINGS)}."
        )
    return canonical


def normalize_schedule(name: str | None) -> str:
    """``"Cosine annealing"`` -> ``"cosine"``; raises ValueError naming the choices."""
    key = "".join(ch for ch in str(name or "constant").lower() if ch.isalnum())
    key = _SCHEDULE_ALIASES.get(key, key)
    if key not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    return key


def optimizer_settings(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings that apply to ``name``: torch's defaults updated by ``overrides``.

    Overrides that do not apply to this optimizer are ignored (so switching from SGD with
    momentum to Adam and back keeps the momentum).
    """
    name = normalize_optimizer(name)
    out = dict(OPTIMIZER_SETTINGS[name])
    for key, value in (overrides or {}).items():
        if key in out:
            out[key] = bool(value) if isinstance(out[key], bool) else float(value)
    if out.get("nesterov") and out.get("momentum", 0) <= 0:
        raise ValueError("Nesterov momentum needs momentum > 0 (e.g. momentum=0.9).")
    return out


def make_optimizer(
    name: str, params: Any, lr: float, overrides: dict[str, Any] | None = None
) -> torch.optim.Optimizer:
    """A fresh ``torch.optim`` optimizer of type ``name`` with the applicable settings."""
    name = normalize_optimizer(name)
    kw = optimizer_settings(name, overrides)
    if "beta1" in kw:
        kw["betas"] = (kw.pop("beta1"), kw.pop("beta2"))
    return getattr(torch.optim, name)(params, lr=lr, **kw)


def make_scheduler(
    name: str, opt: torch.optim.Optimizer, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The scheduler for ``name`` over a run of ``steps`` steps (None for constant)."""
    name = normalize_schedule(name)
    steps = max(1, int(steps))
    sch = torch.optim.lr_scheduler
    if name == "constant":
        return None
    if name == "step":
        return sch.StepLR(opt, step_size=max(1, steps // 3), gamma=0.1)
    if name == "exponential":
        return sch.ExponentialLR(opt, gamma=0.01 ** (1.0 / steps))
    if name == "cosine":
        return sch.CosineAnnealingLR(opt, T_max=steps)
    # One-cycle also cycles momentum/betas where the optimizer has them (not plain SGD).
    cycle = "betas" in opt.defaults or opt.defaults.get("momentum", 0) > 0
    lr = opt.param_groups[0]["lr"]
    return sch.OneCycleLR(opt, max_lr=lr, total_steps=steps, cycle_momentum=cycle)


def schedule_curve(name: str, lr: float, steps: int, optimizer: str = "SGD") -> list[float]:
    """The learning rate of each step of a run, from the real scheduler on a dummy parameter."""
    steps = max(1, int(steps))
    if normalize_schedule(name) == "constant":
        return [float(lr)] * min(steps, 2)
    opt = make_optimizer(optimizer, [torch.zeros(1, requires_grad=True)], lr)
    sched = make_scheduler(name, opt, steps)
    assert sched is not None
    out = []
    for i in range(steps):
        out.append(opt.param_groups[0]["lr"])
        if i + 1 < steps:
            opt.step()  # no grads: a no-op that keeps the scheduler's order check quiet
            sched.step()
    return out


def suggest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """Steepest descent of the smoothed loss against log(lr), before the loss minimum."""
    n = min(len(lrs), len(losses))
    if n < 5:
        return None
    loss = np.asarray(losses[:n], dtype=float)
    loss = np.where(np.isfinite(loss), loss, np.nan)
    # Debiased exponential moving average (as fastai does) to tame noisy losses.
    smooth = np.empty(n)
    avg = 0.0
    beta = 0.9
    for i, v in enumerate(loss):
        v = avg / max(1 - beta**i, 1e-12) if np.isnan(v) else v
        avg = beta * avg + (1 - beta) * v
        smooth[i] = avg / (1 - beta ** (i + 1))
    end = int(np.nanargmin(smooth)) + 1
    if end < 3:
        return None
    slope = np.gradient(smooth[:end], np.log10(np.asarray(lrs[:end], dtype=float)))
    return float(lrs[int(np.argmin(slope))])


# ---- snapshot ------------------------------------------------------------------------------


class Snapshot:
    """Parameters, buffers and RNG states at a starting point; restored in place."""

    def __init__(self, module: torch.nn.Module):
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        self.tensors = {name: t.detach().clone() for name, t in tensors}
        self.torch_rng = torch.get_rng_state()
        self.python_rng = random.getstate()
        self.numpy_rng = np.random.get_state()

    def restore(self, module: torch.nn.Module, seed: int | None = None) -> None:
        """Copy the saved values back into the same tensors (optimizers may hold them)."""
        current = dict(module.named_parameters())
        current.update(module.named_buffers())
        with torch.no_grad():
            for name, saved in self.tensors.items():
                t = current.get(name)
                if t is not None:
                    t.copy_(saved)
        for p in module.parameters():
            p.grad = None
        if seed is None:
            torch.set_rng_state(self.torch_rng)
            random.setstate(self.python_rng)
            np.random.set_state(self.numpy_rng)
        else:
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)

    def equals(self, module: torch.nn.Module) -> bool:
        """True when the module's tensors equal the snapshot (for tests and checks)."""
        current = dict(module.named_parameters())
        current.update(module.named_buffers())
        return all(torch.equal(current[k].detach(), v) for k, v in self.tensors.items())


# ---- runs ----------------------------------------------------------------------------------


class _Stop(BaseException):
    """Ends a run from inside the user's loop (a BaseException so ``except Exception`` in
    training code does not swallow it)."""

    def __init__(self, status: str, note: str | None = None):
        super().__init__(status)
        self.status = status
        self.note = note


class _Active:
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


Body = Callable[[torch.optim.Optimizer, Any, float], None]


class Trainer:
    """Runs a widget's bound training body; see the module docstring."""

    def __init__(self, widget: Any):
        self.w = widget
        self._auto_watcher: Any = None  # the watcher a run started by itself, if any
        self._cond = threading.Condition(threading.RLock())
        self._body: Body | None = None
        self._seed: int | None = None
        self._snapshot: Snapshot | None = None
        self._runs: list[dict[str, Any]] = []
        self._next_id = 1
        self._active: _Active | None = None
        self._pending: str | None = None  # "train" / "lr_find" rerun waiting for the worker
        self._pending_at = 0.0
        self._pending_kw: dict[str, Any] = {}
        self._worker: threading.Thread | None = None
        self._paused = False
        self._step_budget = 0
        self._out: list[dict[str, Any]] = []
        self._out_dirty = False
        self._out_flushed = 0.0
        self.lr_find_result: dict[str, Any] | None = None
        self._quiet = False
        self._runs_published = 0.0

    # -- binding and synchronous runs --

    @property
    def module(self) -> torch.nn.Module:
        module = getattr(self.w, "module", None)
        if module is None:
            raise ValueError(
                "Training controls need the model: build the widget from the module, "
                "e.g. GradWidget(model, example_input=x)."
            )
        return module

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
                self.w.total_steps = int(steps)
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
        if body is None:
            self._message("Nothing to run yet: run a %%train cell or call train(step_fn) first.")
            return
        module = self.module
        w = self.w
        lr, name, settings = float(w.lr), w.optimizer, dict(w.optimizer_settings)
        schedule = w.schedule
        total = int(kw.get("steps") or w.total_steps)
        run: dict[str, Any] = {
            "id": 0,
            "lr": lr,
            "optimizer": name,
            "schedule": schedule if kind == "train" else "lr_find",
            "settings": optimizer_settings(name, settings),
            "steps": total,
            "seed": self._seed,
            "status": "running",
            "error": None,
            "traceback": None,
            "note": None,
            "losses": [],
            "lrs": [],
            "metrics": {},
        }
        a = _Active(run, total, kind, sync)
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
        self._clear_output()
        self._set_state()
        self._publish_runs()
        try:
            self._snapshot.restore(module, self._seed)  # type: ignore[union-attr]
            if kind == "lr_find":
                a.sweep = _sweep(kw["start"], kw["end"], total)
                lr = a.sweep[0]
            a.opt = make_optimizer(name, module.parameters(), lr, settings)
            a.sched = make_scheduler(schedule, a.opt, total) if kind == "train" else None
            self._watch("begin_run")
            body(a.opt, a.sched, lr)
            run["status"] = "done"
        except _Stop as stop:
            run["status"] = stop.status if stop.status != "found" else "done"
            run["note"] = run["note"] or stop.note
            if stop.status == "diverged":  # to the cell (sync) or the widget's output (worker)
                print(f"Run #{run['id']}: {run['error']}", file=sys.stderr)
        except KeyboardInterrupt:
            run["status"] = "stopped"
            run["note"] = "interrupted"
            raise
        except BaseException as exc:
            run["status"] = "error"
            run["error"] = f"{type(exc).__name__}: {exc}"
            run["traceback"] = _user_traceback(exc)
            self._append_output(
                {
                    "output_type": "error",
                    "ename": type(exc).__name__,
                    "evalue": str(exc),
                    "traceback": run["traceback"].splitlines(),
                }
            )
            if sync:
                raise
        finally:
            self._watch("end_run")
            if kind == "lr_find":
                self._finish_lr_find(a)
            a.opt = a.sched = None
            with self._cond:
                self._active = None
                self._paused, self._step_budget = False, 0
                self._cond.notify_all()
            self._flush(a, force=True)
            self._flush_output(force=True)
            self._set_state()
            self._publish_runs()

    # -- the loop helpers the user's code calls --

    def _current(self, what: str) -> _Active:
        a = self._active
        if a is None or a.thread != threading.get_ident():
            raise RuntimeError(
                f"w.{what}() is for the training loop: use it in a %%train cell "
                "(%load_ext gradwidget) or in the step function given to w.train()."
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
                self._watch("sample_next")  # the last step is always sampled
            yield i
            a.step = i + 1
            if a.sched is not None and i + 1 < a.total:
                a.sched.step()
            self._flush(a)

    def log(self, loss: Any = None, **metrics: Any) -> None:
        """Record this step's loss (a tensor or number) and any other scalar metrics."""
        a = self._current("log")
        if a.cancel is not None:  # loops that do not use steps() still stop here
            raise _Stop(a.cancel, a.cancel_note)
        run = a.run
        for key, value in metrics.items():
            run["metrics"].setdefault(key, []).append(_scalar(value, key))
        if loss is None:
            return
        value = _scalar(loss, "loss")
        losses = run["losses"]
        losses.append(value)
        if a.kind == "lr_find":
            if not math.isfinite(value) or value > 4 * a.best:
                raise _Stop("found", "loss rose above 4x its best")
            a.best = min(a.best, value)
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
            raise _Stop("diverged", run["error"])

    def _checkpoint(self, a: _Active) -> None:
        """Between steps: stop if asked, wait while paused (single steps pass one at a time)."""
        with self._cond:
            while True:
                if a.cancel is not None:
                    raise _Stop(a.cancel, a.cancel_note)
                if not self._paused:
                    return
                if self._step_budget > 0:
                    self._step_budget -= 1
                    return
                self._flush(a, force=True)
                self._cond.wait(0.1)

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
        self._publish_preview()
        if self._quiet:
            return
        if name == "lr" and getattr(self.w, "live", False):
            a = self._active
            if a is not None and a.kind == "train" and a.opt is not None:
                lr = float(self.w.lr)
                for g in a.opt.param_groups:
                    g["lr"] = lr
                if a.sched is not None:
                    a.sched.base_lrs = [lr for _ in a.sched.base_lrs]
                a.run["note"] = "lr changed live during the run"
                return
        self.request("train")

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
            out = []
            for r in self._runs:
                c = dict(r)
                c["losses"], c["lrs"] = list(r["losses"]), list(r["lrs"])
                c["metrics"] = {k: list(v) for k, v in r["metrics"].items()}
                c["settings"] = dict(r["settings"])
                out.append(c)
            return out

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

    def _finish_lr_find(self, a: _Active) -> None:
        losses = list(a.run["losses"])
        lrs = list(a.run["lrs"][: len(losses)])
        suggestion = suggest_lr(lrs, losses)
        self.lr_find_result = {"lrs": lrs, "losses": losses, "suggestion": suggestion}
        self._snapshot.restore(self.module, self._seed)  # type: ignore[union-attr]
        self.w.lr_find_plot = {
            "lrs": float_bytes(lrs),
            "losses": float_bytes(losses),
            "suggestion": suggestion,
            "status": a.run["status"] if a.run["status"] != "running" else "done",
            "error": a.run["error"],
        }

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
                with route_thread(self._on_write):
                    self._run(kind, sync=False, **kw)
            except BaseException as exc:  # keep the worker alive; say what went wrong
                self._message(f"Could not start the run: {type(exc).__name__}: {exc}")

    # -- publishing to the browser --

    def _flush(self, a: _Active, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - a.last_flush < FLUSH_INTERVAL:
            return
        a.last_flush = now
        run = a.run
        losses, lrs = run["losses"], run["lrs"]
        nl, nr = len(losses), len(lrs)
        if a.kind == "train" and (nl > a.loss_sent or nr > a.lr_sent):
            content, buffers = run_points(
                run["id"], a.loss_sent, losses[a.loss_sent : nl], a.lr_sent, lrs[a.lr_sent : nr]
            )
            self.w.send(content, buffers)
            a.loss_sent, a.lr_sent = nl, nr
        elapsed = max(now - a.started, 1e-9)
        rate = a.step / elapsed
        self.w.progress = {
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
        if now - self._runs_published >= RUN_INFO_INTERVAL:  # the legend's running loss
            self._publish_runs()
        self._flush_output()

    def send_history(self) -> None:
        """Send every run's points (a view that just rendered asks for them)."""
        for run in self.runs:
            content, buffers = run_points(run["id"], 0, run["losses"], 0, run["lrs"])
            self.w.send(content, buffers)

    def _publish_runs(self) -> None:
        with self._cond:
            info = [run_summary(r) for r in self._runs]
        self._runs_published = time.monotonic()
        self.w.run_info = info

    def _publish_preview(self) -> None:
        w = self.w
        try:
            curve = schedule_curve(w.schedule, w.lr, min(int(w.total_steps), 20_000), w.optimizer)
        except ValueError:
            curve = []
        w.schedule_preview = float_bytes(curve)

    def _set_state(self) -> None:
        with self._cond:
            if self._active is not None:
                state = "paused" if self._paused else "running"
            elif self._pending is not None:
                state = "scheduled"
            else:
                state = "idle"
        if self.w.train_state != state:
            self.w.train_state = state

    # -- output area --

    def _on_write(self, name: str, text: str) -> None:
        self._append_output({"output_type": "stream", "name": name, "text": text})

    def _append_output(self, entry: dict[str, Any]) -> None:
        with self._cond:
            last = self._out[-1] if self._out else None
            if (
                last is not None
                and entry["output_type"] == "stream"
                and last["output_type"] == "stream"
                and last["name"] == entry["name"]
            ):
                last["text"] = (last["text"] + entry["text"])[-MAX_OUTPUT_CHARS:]
            else:
                self._out.append(dict(entry))
                del self._out[:-MAX_OUTPUT_ENTRIES]
            self._out_dirty = True
        self._flush_output(force=entry["output_type"] == "error")

    def _flush_output(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._cond:
            if not self._out_dirty or (not force and now - self._out_flushed < OUTPUT_INTERVAL):
                return
            self._out_dirty = False
            self._out_flushed = now
            outputs = [dict(e) for e in self._out]
        self.w.train_output = outputs

    def _clear_output(self) -> None:
        with self._cond:
            self._out = []
            self._out_dirty = False
        self.w.train_output = []

    def _message(self, text: str) -> None:
        self._append_output({"output_type": "stream", "name": "stderr", "text": text + "\n"})

    # -- live-gradient watcher (issue 4), when present --

    def _watch(self, method: str, *args: Any) -> None:
        # Only run boundaries: the watcher's own clock and gate find the steps to sample.
        w = self.w
        try:
            if method == "begin_run" and w.auto_watch and w.module is not None:
                current = getattr(w, "_watcher", None)
                if current is None or current is self._auto_watcher:
                    w.watch()  # a widget drawn from a module lights up while it trains
                    self._auto_watcher = w._watcher
            watcher = getattr(w, "_watcher", None)
            fn = getattr(watcher, method, None) if watcher is not None else None
            if callable(fn):
                fn(*args)
            if method == "end_run" and self._auto_watcher is not None:
                # Hooks live only while a run does; stats() keeps the last values.
                self._auto_watcher.remove()
        except Exception as exc:  # the watcher must never break a run
            self._message(f"Live gradients: {method} failed: {type(exc).__name__}: {exc}")


def _user_traceback(exc: BaseException) -> str:
    """The traceback without this package's own frames above the user's code."""
    tb = exc.__traceback__
    package = str(Path(__file__).parent)
    while tb is not None and tb.tb_next is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(package):
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _sweep(start: float, end: float, steps: int) -> list[float]:
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]


def _scalar(value: Any, name: str) -> float:
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
