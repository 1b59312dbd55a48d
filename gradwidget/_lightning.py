"""The Lightning callback: a :class:`~gradwidget._fit.FitWatch` driven by ``Trainer.fit``.

Imported only by ``GradWidget.lightning_callback()``, so Lightning loads only when used.
"""

from __future__ import annotations

import sys
from typing import Any

from ._fit import FitWatch, scalar_metrics, total_or_none


def callback_base() -> type:
    """Lightning's ``Callback`` class: of the package the user imported, when one is.

    ``pytorch_lightning`` and ``lightning.pytorch`` are two copies with distinct classes,
    and each Trainer only accepts its own copy's callbacks.
    """
    order = ["pytorch_lightning", "lightning.pytorch"]
    if "lightning.pytorch" in sys.modules and "pytorch_lightning" not in sys.modules:
        order.reverse()
    for name in order:
        try:
            module = __import__(name, fromlist=["Callback"])
        except ImportError:
            continue
        return module.Callback
    raise ImportError(
        "lightning_callback() needs Lightning: pip install 'gradwidget[lightning]' "
        "(pytorch_lightning>=2.0, or lightning>=2.0)."
    )


def _optimizer_info(trainer: Any) -> dict[str, Any]:
    opts = getattr(trainer, "optimizers", None) or []
    if not opts:
        return {"lr": None, "optimizer": None}
    opt = opts[0]
    return {"lr": float(opt.param_groups[0]["lr"]), "optimizer": type(opt).__name__}


def _total(trainer: Any) -> int | None:
    # Losses come per training batch: optimizer steps times the batches each accumulates.
    steps = total_or_none(getattr(trainer, "estimated_stepping_batches", None))
    if steps is None:
        return None
    return steps * max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))


def make_callback(fit: FitWatch) -> Any:
    """A Lightning ``Callback`` (of the Lightning the user imported) that drives ``fit``."""
    base = callback_base()

    class GradWidgetCallback(base):  # type: ignore[misc, valid-type]
        """Shows a ``fit`` in a GradWidget: graph, live gradients, the loss as a run."""

        def __init__(self) -> None:
            super().__init__()
            self.fit = fit

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.fit.start(pl_module, _total(trainer), _optimizer_info(trainer))

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int):
            self.fit.before_forward()

        def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
            # The loss training_step returned, before backward frees the graph: draw it.
            self.fit.after_forward(loss)

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
        ) -> None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            metrics = scalar_metrics(trainer.callback_metrics, skip=("loss",))
            self.fit.log(loss, None, metrics)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.fit.finish("done")

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException):
            self.fit.failed(exception)

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            # Whatever else happened (validate-only runs, early exits): no hook outlives fit.
            self.fit.finish("stopped" if self.fit.running else "done", "fit ended early")

        def __repr__(self) -> str:
            return "<gradwidget Lightning callback>"

    return GradWidgetCallback()
