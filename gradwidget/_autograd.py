"""Reading torch's autograd graph: the walk, op names, output meta and saved tensors.

Everything here takes autograd nodes (``tensor.grad_fn`` and what it points to) and
nothing of gradwidget but the :class:`SavedTensor` record, so the capture, the recorder
and the live-gradient watcher all read the graph the same way:

* :func:`walk` gives the nodes in one deterministic forward order (what keeps ids stable);
* :func:`op_name` / :func:`short_label` / :func:`type_info` name a node (cached per type);
* :func:`output_meta` gives an op's output shape/dtype from the node's input metadata,
  which survives backward;
* :func:`read_saved` reads the tensors an op saved for backward (its ``_saved_*``
  attributes, or ``ctx.saved_tensors`` for custom Functions), and raises
  :class:`FreedGraphError` once backward freed them;
* :func:`keep_deep_graph` / :func:`drain` work around a crash when a very deep graph,
  touched from Python, is freed.
"""

from __future__ import annotations

import gc
import re
import weakref
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch

from ._graph import SavedTensor

#: Name of the autograd node that accumulates into a leaf tensor's ``.grad``.
ACCUMULATE = "torch::autograd::AccumulateGrad"

_BACKWARD_SUFFIX = re.compile(r"Backward\d*$")
_CUSTOM_FN = torch.autograd.function.BackwardCFunction


# ---- the walk --------------------------------------------------------------------------
def walk(roots: Iterable[Any]) -> list[Any]:
    """Autograd nodes reachable from ``roots``, in forward (topological) order.

    Iterative post-order DFS following ``next_functions`` in their order, so the same
    structure always gives the same order (what makes ids stable), and a chain of any
    length walks without RecursionError.

    Parameters
    ----------
    roots : iterable of autograd nodes
        Typically ``t.grad_fn`` of each output; ``None`` entries are skipped.

    Returns
    -------
    list
        Each reachable node once, every node after all the nodes it consumes.
    """
    return walk_depth(roots)[0]


def walk_depth(roots: Iterable[Any]) -> tuple[list[Any], int]:
    """:func:`walk` plus the deepest DFS stack seen (the graph's depth, at least)."""
    order: list[Any] = []
    seen: set[Any] = set()
    deepest = 0
    for root in roots:
        if root is None or root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(root.next_functions))]
        while stack:
            fn, children = stack[-1]
            for child, _ in children:
                if child is not None and child not in seen:
                    seen.add(child)
                    stack.append((child, iter(child.next_functions)))
                    break
            else:
                if len(stack) > deepest:
                    deepest = len(stack)
                stack.pop()
                order.append(fn)
    return order, deepest


# ---- deep graphs: free root first -----------------------------------------------------------
# Once Python has touched an autograd node (any walk does), torch 2.x frees it through its
# Python wrapper, recursively: dropping the output of a chain some 50,000 ops deep then
# overflows the C stack (segfault) instead of using torch's iterative deleteNode. For deep
# graphs we keep the wrappers until every output is gone, then drop them root first, so
# each free is one level deep. The drop waits for the next garbage-collector run (or the
# next capture): a weakref callback runs before the dying tensor lets go of its grad_fn.
DEEP = 5_000
_pending: list[list[Any]] = []


def drain(phase: str = "stop", info: Any = None) -> None:
    """Drop the nodes of deep graphs whose outputs died, root first.

    Also a :data:`gc.callbacks` entry (hence the signature): it acts after a collection.
    """
    if phase != "stop":
        return
    while _pending:
        nodes = _pending.pop()
        while nodes:
            nodes.pop()  # forward order: the last one is the root
    if drain in gc.callbacks:
        gc.callbacks.remove(drain)


class _RootFirstRelease:
    """Holds a deep graph's nodes until its outputs die, then queues them for :func:`drain`."""

    def __init__(self, nodes: list[Any], outputs: list[torch.Tensor]):
        self.nodes = nodes
        unique = {id(t): t for t in outputs}
        self.alive = len(unique)
        for t in unique.values():
            weakref.finalize(t, self._dead)

    def _dead(self) -> None:
        self.alive -= 1
        if self.alive == 0 and self.nodes:
            _pending.append(self.nodes)
            self.nodes = []
            if drain not in gc.callbacks:
                gc.callbacks.append(drain)


def keep_deep_graph(order: list[Any], depth: int, outputs: list[torch.Tensor]) -> None:
    """Free a walked graph root first once ``outputs`` die, if it is :data:`DEEP` or deeper.

    ``order`` and ``depth`` are what :func:`walk_depth` returned for ``outputs``.
    """
    if depth >= DEEP:
        _RootFirstRelease(order, outputs)


# ---- node types ---------------------------------------------------------------------------
class TypeInfo(NamedTuple):
    """What is fixed per autograd node type."""

    op: str  #: ``MulBackward0``
    short: str  #: ``Mul``
    is_accumulate: bool  #: an AccumulateGrad node (stands for a leaf tensor)
    attrs: tuple[str, ...]  #: attributes holding what the op saved for backward


# Node names and saved attributes are fixed per C++/custom-Function class, so one dir()
# per type instead of one per node keeps capture cheap on big graphs.
_type_cache: dict[type, TypeInfo] = {}


def type_info(fn: Any) -> TypeInfo:
    """Op name, short label, AccumulateGrad or not, and saved attributes of ``fn``'s type."""
    cls = type(fn)
    info = _type_cache.get(cls)
    if info is None:
        full = fn.name()
        op = full.rsplit("::", 1)[-1]
        if isinstance(fn, _CUSTOM_FN):
            attrs: tuple[str, ...] = ("saved_tensors",)
        else:
            attrs = tuple(
                a
                for a in dir(fn)
                if a.startswith("_saved_") and not a.endswith(("sym_sizes", "sym_strides"))
            )
        info = TypeInfo(op, short_label(op), full == ACCUMULATE, attrs)
        _type_cache[cls] = info
    return info


def op_name(fn: Any) -> str:
    """``MulBackward0`` for an autograd node (custom Functions included)."""
    return type_info(fn)[0]


def short_label(op: str) -> str:
    """``AddmmBackward0`` -> ``Addmm``: the forward op a learner recognises."""
    short = _BACKWARD_SUFFIX.sub("", op)
    return short or op


_dtype_texts: dict[torch.dtype, str] = {}


def dtype_text(dtype: torch.dtype) -> str:
    """``float32`` for ``torch.float32`` (cached: called for every node)."""
    text = _dtype_texts.get(dtype)
    if text is None:
        text = _dtype_texts[dtype] = str(dtype).removeprefix("torch.")
    return text


def output_meta(fn: Any) -> tuple[tuple[int, ...] | None, str | None, int]:
    """(shape, dtype) of the first tensor the op produced in forward, and how many it made.

    Read from the node's input metadata (what backward checks incoming gradients
    against), so it is known after the fact and even after backward freed the graph.
    """
    try:
        metas = fn._input_metadata
    except (AttributeError, RuntimeError):  # private API: degrade, never fail a capture
        return None, None, 0
    if not metas:
        return None, None, 0
    first = metas[0]
    return tuple(first.shape), dtype_text(first.dtype), len(metas)


# ---- saved tensors ----------------------------------------------------------------------
class FreedGraphError(ValueError):
    """The graph's saved tensors were freed by backward()."""


_FREED_HINT = (
    "This graph was already freed by backward(), so the tensors it saved for backward are "
    "gone. Capture before calling backward(), or call backward(retain_graph=True)."
)

# Attribute values that are never tensors (``None`` may be an undefined optional tensor).
_SCALARS = (bool, int, float, str, torch.dtype, torch.device, torch.layout)


def _is_freed(err: RuntimeError) -> bool:
    msg = str(err)
    return "freed" in msg or "second time" in msg


def _as_saved(attr: str, t: torch.Tensor) -> tuple[SavedTensor, tuple[Any, int]]:
    try:
        storage = t.untyped_storage()
        # _cdata identifies the storage (unique while alive; the graph keeps it alive).
        key: tuple[Any, int] = (storage._cdata, storage.nbytes())
    except (RuntimeError, NotImplementedError, AttributeError):  # sparse/nested: the view
        key = (id(t), t.nbytes)
    return SavedTensor(attr, tuple(t.shape), dtype_text(t.dtype), t.nbytes), key


def read_saved(fn: Any) -> list[tuple[SavedTensor, tuple[Any, int]]]:
    """Tensors ``fn`` keeps for backward, each with a storage key ``(storage, bytes)``.

    The key lets a whole graph count each storage once. Tensors that an in-place op
    modified after they were saved cannot be read any more and are skipped.

    Raises
    ------
    FreedGraphError
        When backward already freed them.
    """
    out = []
    for attr in type_info(fn).attrs:
        try:
            val = getattr(fn, attr)
        except RuntimeError as err:
            if _is_freed(err):
                raise FreedGraphError(_FREED_HINT) from err
            continue  # modified in place since saved: backward will say so itself
        if isinstance(val, torch.Tensor):
            out.append(_as_saved(attr.removeprefix("_saved_"), val))
        elif isinstance(val, (tuple, list)) and val:
            name = attr.removeprefix("_saved_")
            found = len(out)
            for i, v in enumerate(val):
                if isinstance(v, torch.Tensor):
                    out.append(_as_saved(f"{name}[{i}]", v))
            if len(out) == found and all(isinstance(v, _SCALARS) for v in val):
                _not_a_tensor(fn, attr)
        elif isinstance(val, _SCALARS):
            _not_a_tensor(fn, attr)
    return out


def _not_a_tensor(fn: Any, attr: str) -> None:
    """Stop reading ``attr`` (e.g. a conv's ``_saved_stride``) on this node type."""
    cls = type(fn)
    info = _type_cache[cls]
    _type_cache[cls] = info._replace(attrs=tuple(a for a in info.attrs if a != attr))
