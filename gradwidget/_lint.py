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


def nonfinite(stats: dict[str, dict[str, Any]]) -> list[dict]:
    """NaN/Inf: one lint for the node nearest the loss (where backward met it first)."""
    bad = [(s.get("index", 0), nid, s) for nid, s in stats.items() if s["nonfinite"]]
    if not bad:
        return []
    _, nid, s = max(bad, key=lambda b: b[0])
    others = len(bad) - 1
    more = f" ({others} more node{'s' * (others != 1)} downstream in backward)" if others else ""
    return [
        _lint(
            "nonfinite",
            "error",
            nid,
            s["name"],
            f"{s['nonfinite']:,} of {s['numel']:,} gradient values of {s['name']} are NaN/Inf"
            + more
            + ".",
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
                "was above max_norm. The colors show the norms before clipping; the optimizer "
                "stepped with the clipped gradient.",
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
