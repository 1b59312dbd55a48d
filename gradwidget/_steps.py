"""One training step's autograd graph, seen from the watcher: outputs, alignment, callbacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch


def engine_callback(fn: Callable[[], None]) -> bool:
    """Run ``fn`` when the current backward finishes; False outside backward."""
    try:
        torch.autograd.Variable._execution_engine.queue_callback(fn)
    except RuntimeError:
        return False
    return True


def distributed() -> bool:
    """True in a multi-process group: intermediates are then this rank's own gradient."""
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def align(step_keys: list[str], graph_keys: list[str]) -> list[int | None]:
    """Index into ``graph_keys`` for each of ``step_keys`` (None where unmatched).

    Identical sequences map one to one. Otherwise (e.g. the widget drew the loss and the
    step is the module's output) the step's nodes are matched in order as a subsequence.
    """
    if step_keys == graph_keys:
        return list(range(len(step_keys)))
    out: list[int | None] = []
    j = 0
    for key in step_keys:
        k = j
        while k < len(graph_keys) and graph_keys[k] != key:
            k += 1
        if k < len(graph_keys):
            out.append(k)
            j = k + 1
        else:
            out.append(None)
    return out


def tensors_in(out: Any) -> list[torch.Tensor]:
    """Tensors of a forward's output (a tensor, or a tuple/list/dict of them), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


class NodeHook:
    """A hook handle that also keeps its autograd node alive until removed."""

    __slots__ = ("handle", "node")

    def __init__(self, node: Any, handle: Any):
        self.node = node
        self.handle = handle

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
        self.handle = self.node = None
