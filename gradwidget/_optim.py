"""Optimizers and learning-rate schedules by name: the factory behind the training controls."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

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


def lr_sweep(start: float, end: float, steps: int) -> list[float]:
    """The exponentially rising learning rates of an lr range test."""
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
