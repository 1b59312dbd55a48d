"""Gradient lint: warnings about a training loop, each naming the tensor and what to do.

Checks run on each sample of :class:`gradwidget._watch.Watcher` (never per step). Each lint
is a plain dict (JSON-able, shown by the widget)::

    {"code": "accumulating", "severity": "error", "node": "leaf:0.weight",
     "name": "0.weight", "message": "...", "advice": "..."}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class LintConfig:
    """Thresholds of the gradient lint.

    Attributes
    ----------
    vanishing : float
        A parameter's gradient is vanishing when ``norm(grad) < vanishing * norm(weight)``.
    exploding : float
        Exploding when ``norm(grad) > exploding * max(norm(weight), 1)``.
    patience : int
        Vanishing/exploding must hold on this many samples in a row before it is reported
        (one odd batch is not a trend). NaN/Inf, accumulation and missing gradients are
        reported at once.
    update_low, update_high : float
        A parameter's update-to-weight ratio ``norm(Δw) / norm(w)`` over an optimizer step
        is far off below ``update_low`` (the layer barely learns) or above ``update_high``
        (the step rewrites it); ~1e-3 is the usual healthy value.
    """

    vanishing: float = 1e-7
    exploding: float = 1e3
    patience: int = 3
    update_low: float = 1e-5
    update_high: float = 1e-1


def _lint(code: str, severity: str, node: str, name: str, message: str, advice: str) -> dict:
    return {
        "code": code,
        "severity": severity,
        "node": node,
        "name": name,
        "message": message,
        "advice": advice,
    }


#: What to do, by where a NaN/Inf gradient starts (``origin["kind"]``).
_ORIGIN_ADVICE = {
    "backward": "Guard the op at its singular point (sqrt(x + eps), clamp before log or "
    "a division), or clip gradients.",
    "forward": "Guard it in the forward: an epsilon in the divisor, clamp before log/exp; "
    "lower the learning rate if the values overflow.",
    "data": "Check the inputs for NaN/Inf (torch.isfinite(x).all()) before the forward pass.",
    "leaf": "The weights are NaN/Inf already: an optimizer step applied a NaN/Inf gradient. "
    "watch(model, every=0, trace='always') finds the op on the step it first appears in; "
    "lower the learning rate or clip gradients, and restart from a checkpoint.",
}
_ORIGIN_WHY = {
    "backward": "its backward turns finite gradients into NaN/Inf (e.g. sqrt, log, pow or "
    "a division at 0)",
    "forward": "its forward output already holds NaN/Inf (e.g. a division by 0, log of 0, "
    "overflow), so every gradient through it does too",
    "data": "the data it reads is already NaN/Inf",
    "leaf": "its values are NaN/Inf",
}


def origin_text(origin: dict[str, Any]) -> str:
    """ "NaN gradient starts at <module> · <Op>, source line f.py:42: <why>"."""
    where = " · ".join(p for p in (origin.get("module"), origin.get("op")) if p)
    if origin["kind"] == "leaf":
        where = f"the parameter {origin['name']}"
    text = f"{origin['value']} gradient starts at {where or origin['name']}"
    if origin.get("source"):
        text += f", source line {origin['source']}"
    return f"{text}: {_ORIGIN_WHY[origin['kind']]}"


def nonfinite(
    stats: dict[str, dict[str, Any]], origin: dict[str, Any] | None = None, tracing: bool = True
) -> list[dict]:
    """NaN/Inf: one lint, for where it starts when a traced step found that
    (:mod:`gradwidget._origin`), else for the node nearest the loss (``tracing``: a step
    will be traced)."""
    bad = [(s.get("index", 0), nid, s) for nid, s in stats.items() if s["nonfinite"]]
    if not bad:
        return []
    n = len(bad)
    if origin is not None:
        held = f" ({n:,} node{'s' * (n != 1)} hold NaN/Inf gradients now)."
        return [
            _lint(
                "nonfinite",
                "error",
                origin["node"],
                origin["name"],
                origin_text(origin) + held,
                _ORIGIN_ADVICE[origin["kind"]],
            )
        ]
    _, nid, s = max(bad, key=lambda b: b[0])
    others = n - 1
    more = f" ({others} more node{'s' * (others != 1)} downstream in backward)" if others else ""
    return [
        _lint(
            "nonfinite",
            "error",
            nid,
            s["name"],
            f"{s['nonfinite']:,} of {s['numel']:,} gradient values of {s['name']} are NaN/Inf"
            + more
            + (". The next sampled step is traced to find where it starts." if tracing else "."),
            "Lower the learning rate, check the inputs and the loss for NaN/Inf, guard "
            "log/sqrt/division against 0, or clip gradients; run one step under "
            "torch.autograd.detect_anomaly() to find the op that produced it.",
        )
    ]


def accumulating(node: str, name: str, before: float, added: float) -> dict:
    """``.grad`` still held the previous step's gradient when a new one was added."""
    return _lint(
        "accumulating",
        "error",
        node,
        name,
        f"Gradients of {name} accumulate across steps: .grad still held the previous "
        f"gradient (norm {before:.3g}) after the optimizer updated the weights, and this "
        f"backward added a new one (norm {added:.3g}) to it.",
        "Call optimizer.zero_grad() (or model.zero_grad()) once per step, before loss.backward().",
    )


def no_grad(node: str, name: str) -> dict:
    """A parameter that requires grad received none."""
    return _lint(
        "no-grad",
        "warning",
        node,
        name,
        f"{name} requires grad but received no gradient: it is not used in the forward "
        "pass, or its path to the loss is cut (detach(), .data, no_grad(), a non-float op).",
        "Use it in the forward pass (or remove the detach), or freeze it on purpose with "
        "requires_grad_(False) so the optimizer skips it.",
    )


class TrendLint:
    """Vanishing/exploding gradients, reported after ``patience`` samples in a row."""

    def __init__(self, config: LintConfig):
        self.config = config
        self._streak: dict[tuple[str, str], int] = {}

    def __call__(self, stats: dict[str, dict[str, Any]]) -> list[dict]:
        cfg = self.config
        out: list[dict] = []
        seen: set[tuple[str, str]] = set()
        for nid, s in stats.items():
            w = s.get("weight_norm")
            g = s["norm"]
            if w is None or s["nonfinite"] or not math.isfinite(g):
                continue
            kind = None
            if w > 0 and g < cfg.vanishing * w:
                kind = "vanishing"
            elif g > cfg.exploding * max(w, 1.0):
                kind = "exploding"
            if kind is None:
                continue
            key = (nid, kind)
            seen.add(key)
            n = self._streak.get(key, 0) + 1
            self._streak[key] = n
            if n < cfg.patience:
                continue
            ratio = g / w if w > 0 else math.inf
            if kind == "vanishing":
                message = (
                    f"The gradient of {s['name']} is vanishing: norm {g:.3g} is "
                    f"{ratio:.2g}x the norm of {s['name']} itself ({w:.3g}), "
                    "so it barely learns."
                )
                advice = (
                    "Check for saturated activations (sigmoid/tanh), dead ReLUs or a "
                    "too-deep plain stack; use a better init (kaiming/xavier), "
                    "normalization layers, residual connections, or a larger learning rate."
                )
            else:
                message = (
                    f"The gradient of {s['name']} is exploding: norm {g:.3g} against "
                    f"the norm of {s['name']} itself ({w:.3g})."
                )
                advice = (
                    "Lower the learning rate, clip gradients "
                    "(torch.nn.utils.clip_grad_norm_), normalize inputs/targets, or add "
                    "normalization layers."
                )
            out.append(_lint(kind, "warning", nid, s["name"], message, advice))
        for key in list(self._streak):
            if key not in seen:
                del self._streak[key]
        return out


def step_lints(
    stats: dict[str, dict[str, Any]], skipped: int, config: LintConfig | None = None
) -> list[dict]:
    """What an optimizer step's sample says: skipped steps, clipping, update sizes."""
    config = config or LintConfig()
    out = []
    if skipped:
        out.append(
            _lint(
                "skipped-steps",
                "info",
                "",
                "GradScaler",
                f"GradScaler skipped {skipped:,} optimizer step{'s' * (skipped != 1)}: their "
                "gradients held inf/NaN at the current loss scale, so the weights were not "
                "updated and the scale was lowered.",
                "Nothing to do if it happens now and then (that is how the scale is found); "
                "if it keeps happening, the gradients themselves are non-finite.",
            )
        )
    clipped = [s for s in stats.values() if s.get("clipped")]
    if clipped:
        s = clipped[0]
        out.append(
            _lint(
                "clipped",
                "info",
                "",
                "clip_grad_norm_",
                f"Gradients were clipped this step: their total norm {s['clip_total_norm']:.3g} "
                f"was above max_norm {s.get('clip_max_norm', math.nan):.3g}. The colors show "
                "the clipped gradient the optimizer stepped with.",
                "Frequent clipping hides exploding gradients: a smaller learning rate or "
                "warm-up may be the better fix.",
            )
        )
    for nid, s in stats.items():
        r = s.get("update_ratio")
        if r is None or not math.isfinite(r) or s.get("kind") != "leaf":
            continue
        if r < config.update_low or r > config.update_high:
            low = r < config.update_low
            out.append(
                _lint(
                    "update-small" if low else "update-large",
                    "warning",
                    nid,
                    s["name"],
                    f"The last optimizer step changed {s['name']} by {r:.2g} of its norm "
                    f"(‖Δw‖/‖w‖; ~1e-3 is typical).",
                    "Raise the learning rate for it (or check it is not frozen by accident)."
                    if low
                    else "Lower the learning rate, or warm it up: steps this large rewrite "
                    "the layer instead of refining it.",
                )
            )
    return out
