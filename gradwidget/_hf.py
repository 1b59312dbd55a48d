"""The Hugging Face Trainer callback: a :class:`~gradwidget._fit.FitWatch` driven by
``transformers.Trainer.train``.

Imported only by ``GradWidget.hf_callback()``, so transformers loads only when used.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from ._fit import FitWatch, scalar_metrics, total_or_none


def _trainer_in_stack() -> Any:
    """The ``transformers.Trainer`` whose training loop called us (its callbacks are not
    told): found as ``self`` in the calling frames, or None."""
    from transformers import Trainer

    f = sys._getframe(1)
    while f is not None:
        owner = f.f_locals.get("self")
        if isinstance(owner, Trainer):
            return owner
        f = f.f_back
    return None


def _optimizer_info(optimizer: Any) -> dict[str, Any]:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    groups = getattr(inner, "param_groups", None)
    if not groups:
        return {"lr": None, "optimizer": None}
    return {"lr": float(groups[0]["lr"]), "optimizer": type(inner).__name__}


def make_callback(fit: FitWatch) -> Any:
    """A ``transformers.TrainerCallback`` that drives ``fit``."""
    try:
        from transformers import TrainerCallback
    except ImportError as err:
        raise ImportError(
            "hf_callback() needs transformers: pip install 'gradwidget[hf]' "
            "(transformers>=4.41, accelerate)."
        ) from err

    class GradWidgetCallback(TrainerCallback):
        """Shows ``Trainer.train()`` in a GradWidget: graph, live gradients, the loss."""

        def __init__(self) -> None:
            self.fit = fit
            self._undo: list[Any] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._restore()
            model = kw.get("model")
            self.fit.start(
                model, total_or_none(state.max_steps), _optimizer_info(kw.get("optimizer"))
            )
            if model is not None:
                self._grab_first_forward(model)
            self._guard(_trainer_in_stack())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
            if logs and "loss" in logs:
                metrics = scalar_metrics(logs, skip=("loss", "epoch", "total_flos"))
                self.fit.log(logs["loss"], int(state.global_step), metrics)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._restore()
            self.fit.finish("done")

        def _grab_first_forward(self, model: Any) -> None:
            # The Trainer calls model(**inputs) and takes the loss from its output: record
            # that first forward (the post hook also runs when forward raises).
            def pre(_m: Any, _args: Any) -> None:
                self.fit.before_forward()

            def post(_m: Any, _args: Any, out: Any) -> None:
                for h in hooks:
                    h.remove()
                self.fit.after_forward(out)

            hooks = [
                model.register_forward_pre_hook(pre),
                model.register_forward_hook(post, always_call=True),
            ]
            self._undo.extend(h.remove for h in hooks)

        def _guard(self, trainer: Any) -> None:
            # transformers has no callback event for a failed train(): wrap the step the
            # time goes into, so an exception or Ctrl+C there still removes every hook.
            if trainer is None:
                return
            own = vars(trainer)
            had, before = "training_step" in own, own.get("training_step")
            step = trainer.training_step

            @functools.wraps(step)
            def guarded(*a: Any, **k: Any) -> Any:
                try:
                    return step(*a, **k)
                except BaseException as exc:
                    self._restore()
                    self.fit.failed(exc)
                    raise

            def undo() -> None:
                if had:
                    trainer.training_step = before
                else:
                    own.pop("training_step", None)

            trainer.training_step = guarded
            self._undo.append(undo)

        def _restore(self) -> None:
            undo, self._undo = self._undo, []
            for fn in undo:
                fn()

        def __repr__(self) -> str:
            return "<gradwidget Hugging Face Trainer callback>"

    return GradWidgetCallback()
