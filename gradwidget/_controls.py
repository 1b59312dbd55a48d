"""The training-controls part of GradWidget: lr/optimizer/schedule traits, runs, progress."""

from __future__ import annotations

from typing import Any

import torch
import traitlets

from ._optim import OPTIMIZER_SETTINGS, normalize_optimizer, normalize_schedule, optimizer_settings
from ._train import Body, RunHooks, Trainer

#: The settings whose change reruns the bound training.
SETTINGS = ("lr", "optimizer", "optimizer_settings", "schedule", "total_steps")


class TrainingControls(traitlets.HasTraits):
    """Traits and methods of the training controls; a part of :class:`~gradwidget.GradWidget`.

    The logic lives in a :class:`~gradwidget._train.Trainer`, which sees this part only
    through a small publisher (:class:`~gradwidget._train.Publisher`) defined below.
    """

    lr = traitlets.Float(1e-2, help="Learning rate of the next run.").tag(sync=True)
    optimizer = traitlets.Unicode("Adam", help="torch.optim class name.").tag(sync=True)
    optimizer_settings = traitlets.Dict(help="Overrides of the optimizer's defaults.").tag(
        sync=True
    )
    optimizer_defaults = traitlets.Dict(help="Settings the UI shows per optimizer.").tag(sync=True)
    schedule = traitlets.Unicode("constant", help="Learning-rate schedule name.").tag(sync=True)
    total_steps = traitlets.Int(100, help="Steps of a run.").tag(sync=True)
    live = traitlets.Bool(False, help="Retune lr in place instead of rerunning.").tag(sync=True)
    train_state = traitlets.Unicode("idle", help="idle, running, paused or scheduled.").tag(
        sync=True
    )
    run_info = traitlets.List(help="Summary of each run (_wire.run_summary).").tag(sync=True)
    progress = traitlets.Dict(help="Step, total, rate, eta and loss of the run.").tag(sync=True)
    schedule_preview = traitlets.Bytes(b"", help="float32 lr of each step to come.").tag(sync=True)
    lr_find_plot = traitlets.Dict(help="Result of the last lr range test.").tag(sync=True)
    train_output = traitlets.List(help="Output entries of the run (notebook format).").tag(
        sync=True
    )
    trainable = traitlets.Bool(False, help="True when the widget has a module to train.").tag(
        sync=True
    )

    def _init_training(self, module: torch.nn.Module | None, hooks: RunHooks | None) -> None:
        self._trainer = Trainer(module, _Publisher(self), hooks)
        self.optimizer_defaults = OPTIMIZER_SETTINGS
        self.trainable = module is not None
        self._trainer.publish_preview()
        self.on_msg(self._on_training_msg)  # type: ignore[attr-defined]

    # ---- validation and change handling ----
    @traitlets.validate("lr")
    def _check_lr(self, proposal: dict) -> float:
        value = float(proposal["value"])
        if not (value > 0 and value < float("inf")):
            raise traitlets.TraitError(f"lr must be a positive finite number; got {value}.")
        return value

    @traitlets.validate("optimizer")
    def _check_optimizer(self, proposal: dict) -> str:
        try:
            return normalize_optimizer(proposal["value"])
        except ValueError as exc:
            raise traitlets.TraitError(str(exc)) from None

    @traitlets.validate("schedule")
    def _check_schedule(self, proposal: dict) -> str:
        try:
            return normalize_schedule(proposal["value"])
        except ValueError as exc:
            raise traitlets.TraitError(str(exc)) from None

    @traitlets.validate("optimizer_settings")
    def _check_optimizer_settings(self, proposal: dict) -> dict:
        try:
            optimizer_settings(self.optimizer, proposal["value"])
        except (TypeError, ValueError) as exc:
            raise traitlets.TraitError(str(exc)) from None
        return proposal["value"]

    @traitlets.validate("total_steps")
    def _check_total_steps(self, proposal: dict) -> int:
        if proposal["value"] < 1:
            raise traitlets.TraitError("total_steps must be at least 1.")
        return proposal["value"]

    @traitlets.observe(*SETTINGS)
    def _on_training_setting(self, change: dict) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and change["old"] != change["new"]:
            trainer.on_settings_change(change["name"])

    def _on_training_msg(self, _widget: Any, content: dict, _buffers: list) -> None:
        if not isinstance(content, dict) or content.get("type") != "train":
            return
        t = self._trainer
        actions = {
            "run": lambda: t.request("train"),
            "pause": t.pause,
            "resume": t.resume,
            "step": t.single_step,
            "stop": t.stop,
            "reset": t.reset,
            "clear": t.clear,
            "lr_find": lambda: t.lr_find(sync=False),
            "hello": t.send_history,
        }
        fn = actions.get(content.get("action"))
        if fn is None:
            return
        try:
            fn()
        except (RuntimeError, ValueError) as exc:
            t.message(str(exc))

    # ---- public API ----
    def bind_training(self, body: Body, *, steps: int | None = None, seed: int | None = None):
        """Bind a training body ``body(opt, sched, lr)`` and run it once now (``%%train``).

        Later setting changes rerun it from the same starting point; :meth:`train` binds a
        step function instead.
        """
        __tracebackhide__ = True
        self._trainer.bind(body, steps=steps, seed=seed)

    def train(self, step_fn: Any, steps: int | None = None, *, seed: int | None = None) -> None:
        """Run ``step_fn`` for ``steps`` steps now; later setting changes rerun it.

        Parameters
        ----------
        step_fn : callable
            ``step_fn(opt)`` does one training step with the given optimizer and returns the
            loss (a scalar tensor or a number) or None (then call ``log`` yourself).
        steps : int, optional
            Number of steps (default: the ``total_steps`` trait).
        seed : int, optional
            Seed torch/random/numpy at the start of every run instead of restoring the RNG
            state captured before the first run.

        Notes
        -----
        This call runs synchronously. Changing ``lr``, ``optimizer``, ``optimizer_settings``,
        ``schedule`` or ``total_steps`` afterwards (in Python or with the controls) reruns
        it from the same starting parameters in a background thread; use ``wait()``.
        """
        self._trainer.train_fn(step_fn, steps=steps, seed=seed)

    def steps(self) -> Any:
        """Iterate over the steps of the current run (use inside a ``%%train`` cell).

        Honours pause/stop from the controls, advances the lr schedule after each step and
        reports progress.
        """
        return self._trainer.steps()

    def log(self, loss: Any = None, **metrics: Any) -> None:
        """Record the loss (scalar tensor or number) of this step, plus optional metrics.

        A non-finite loss, or one above 1000x the first, stops the run as ``"diverged"``.
        """
        self._trainer.log(loss, **metrics)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no run is in flight or scheduled; returns False on timeout."""
        return self._trainer.wait(timeout)

    def stop(self) -> None:
        """Stop the run in flight and cancel any scheduled rerun."""
        self._trainer.stop()

    def pause(self) -> None:
        """Pause the run in flight at the next step."""
        self._trainer.pause()

    def resume(self) -> None:
        """Resume a paused run."""
        self._trainer.resume()

    def reset(self) -> None:
        """Stop and restore the model's parameters, buffers and RNG state to the snapshot."""
        self._trainer.reset()

    def clear_runs(self) -> None:
        """Forget the finished runs (their curves disappear)."""
        self._trainer.clear()

    def lr_find(self, steps: int = 100, start: float = 1e-6, end: float = 10.0) -> dict:
        """Learning-rate range test from the snapshot; the model is restored afterwards.

        Reruns the bound training with the lr rising exponentially from ``start`` to ``end``
        over ``steps`` steps, stopping once the loss exceeds 4x its best.

        Returns
        -------
        dict
            ``{"lrs": [...], "losses": [...], "suggestion": float or None}``: the suggestion
            is where the smoothed loss falls fastest.
        """
        return self._trainer.lr_find(steps, start, end)

    @property
    def runs(self) -> list[dict]:
        """The run history: dicts with ``lr``, ``optimizer``, ``schedule``, ``losses``,
        ``lrs``, ``status`` (running/done/stopped/diverged/error), ``error`` and more."""
        return self._trainer.runs


class _Publisher:
    """What the Trainer sees of the training part: settings in, trait updates out."""

    def __init__(self, part: TrainingControls):
        self._w = part

    def settings(self) -> dict[str, Any]:
        """The current training settings, as the Trainer reads them."""
        return {
            "lr": self._w.lr,
            "optimizer": self._w.optimizer,
            "optimizer_settings": dict(self._w.optimizer_settings),
            "schedule": self._w.schedule,
            "total_steps": self._w.total_steps,
            "live": self._w.live,
        }

    def set_total_steps(self, steps: int) -> None:
        self._w.total_steps = steps

    def show_state(self, state: str) -> None:
        if self._w.train_state != state:
            self._w.train_state = state

    def show_progress(self, progress: dict[str, Any]) -> None:
        self._w.progress = progress

    def show_runs(self, summaries: list[dict[str, Any]]) -> None:
        self._w.run_info = summaries

    def show_points(self, content: dict[str, Any], buffers: list[bytes]) -> None:
        self._w.send(content, buffers)  # type: ignore[attr-defined]

    def show_output(self, entries: list[dict[str, Any]]) -> None:
        self._w.train_output = entries

    def show_lr_find(self, plot: dict[str, Any]) -> None:
        self._w.lr_find_plot = plot

    def show_preview(self, lrs: bytes) -> None:
        self._w.schedule_preview = lrs
