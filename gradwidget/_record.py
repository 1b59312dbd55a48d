"""Recording a forward pass: which module and which line of user code ran each op.

``record()`` adds the module path and the user's ``file:line`` per op, and reads the
saved tensors right after each op ran, so they are known even after backward. Reading
the attributes (rather than ``saved_tensors_hooks``) keeps their names (``mat1``,
``result``...) and leaves the user's own pack/unpack hooks alone.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ._autograd import read_saved, type_info
from ._graph import Graph
from ._names import check_module, user_frame


@dataclass
class OpMeta:
    """What recording learned about one autograd node during forward."""

    module: str | None
    source: str | None
    saved: list = field(default_factory=list)


def _source_of(frame: FrameType | None) -> str | None:
    if frame is None:
        return None
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _sequence_nr() -> int:
    """Current autograd sequence number: nodes created from now on get larger ones."""
    get = getattr(torch._C._autograd, "_get_sequence_nr", None)
    return get() if get is not None else -1


class _RecordMode(TorchFunctionMode):
    def __init__(self, rec: record):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            if out.grad_fn is not None:
                self.rec._note(out)
        elif isinstance(out, (tuple, list)):
            for o in out:
                if isinstance(o, torch.Tensor) and o.grad_fn is not None:
                    self.rec._note(o)
        return out


class record:
    """Record a forward pass: module paths, source lines and saved-tensor sizes per op.

    Inside the block every torch function call is seen (via a ``TorchFunctionMode``) and
    the module stack is tracked with global forward hooks; both are removed on exit, also
    when the block raises. Tensors saved for backward are read right after the op that
    saved them ran, before backward can free them.

    Parameters
    ----------
    module : torch.nn.Module, optional
        Names modules and parameters by their dotted path. Without it the outermost module
        called inside the block is used as the root.

    Attributes
    ----------
    graph : Graph
        The graph of every tensor produced in the block that requires grad and that no
        other recorded op consumed.

    Examples
    --------
    >>> with gradwidget.record(model) as rec:
    ...     loss = model(x).sum()
    >>> rec.graph  # or rec.graph_of(loss)
    """

    def __init__(self, module: torch.nn.Module | None = None):
        check_module(module)
        self.module = module
        self.root: torch.nn.Module | None = None
        self.meta: dict[Any, OpMeta] = {}
        self._produced: dict[Any, Any] = {}  # grad_fn -> weakref to the tensor it produced
        self._stack: list[str | None] = []
        self._paths: dict[int, str] = {}
        self._types: dict[str, str] = {}
        self._hooks: list[Any] = []
        self._mode: _RecordMode | None = None
        self._start_nr = -1
        if module is not None:
            self._adopt_root(module)

    def __repr__(self) -> str:
        return f"<gradwidget.record: {len(self.meta)} ops>"

    def __del__(self) -> None:
        # Newest first (root first): a deep graph freed leaf first overflows the C stack
        # (see the deep-graph notes in _autograd).
        meta = getattr(self, "meta", None)
        while meta:
            meta.popitem()

    def _adopt_root(self, module: torch.nn.Module) -> None:
        self.root = module
        for path, m in module.named_modules():
            self._paths[id(m)] = path
            self._types[path] = type(m).__name__

    # module stack, via global forward hooks (removed on exit)
    def _pre(self, mod, args):
        if not self._paths:
            self._adopt_root(mod)
        path = self._paths.get(id(mod))
        self._stack.append(path or None)

    def _post(self, mod, args, out):
        if self._stack:
            self._stack.pop()

    def __enter__(self) -> record:
        from torch.nn.modules import module as nn_module

        self._start_nr = _sequence_nr()
        self._hooks = [
            nn_module.register_module_forward_pre_hook(self._pre),
            nn_module.register_module_forward_hook(self._post, always_call=True),
        ]
        try:
            self._mode = _RecordMode(self)
            self._mode.__enter__()
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._mode is not None:
                self._mode.__exit__(*exc)
        finally:
            self._mode = None
            self._remove_hooks()
            self._stack.clear()

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _note(self, t: torch.Tensor) -> None:
        """Annotate ``t.grad_fn`` and every not-yet-seen node behind it made in the block."""
        root = t.grad_fn
        if root not in self.meta:
            module = self._stack[-1] if self._stack else None
            src = _source_of(user_frame())
            start = self._start_nr
            todo = [root]
            while todo:
                fn = todo.pop()
                if fn in self.meta or type_info(fn).is_accumulate:
                    continue
                # Nodes made before the block belong to no recorded module or line.
                if start >= 0 and fn._sequence_nr() < start:
                    continue
                self.meta[fn] = OpMeta(module, src, saved=read_saved(fn))
                todo.extend(c for c, _ in fn.next_functions if c is not None)
        self._produced[root] = weakref.ref(t)

    def outputs(self) -> list[torch.Tensor]:
        """Tensors produced in the block that no other recorded op consumed.

        Returns
        -------
        list of torch.Tensor
            Those still alive and still pointing at the node that produced them.
        """
        consumed = {c for fn in self.meta for c, _ in fn.next_functions if c is not None}
        outs = []
        for fn, ref in self._produced.items():
            t = ref()
            if fn not in consumed and t is not None and t.grad_fn is fn:
                outs.append(t)
        return outs

    @property
    def graph(self) -> Graph:
        """The Graph of every tensor produced in the block that requires grad."""
        outs = self.outputs()
        if not outs:
            raise ValueError("Nothing that requires grad was computed inside the record block.")
        return self._build(outs, None, False)

    def graph_of(
        self,
        *outputs: torch.Tensor,
        params: Mapping[str, torch.Tensor] | None = None,
        saved: bool = False,
    ) -> Graph:
        """The Graph behind ``outputs``, with what recording learned.

        Parameters
        ----------
        *outputs : torch.Tensor
            Tensors to capture (a single sequence of tensors is accepted too).
        params : mapping of str to torch.Tensor, optional
            Extra names for leaf tensors.
        saved : bool
            Add one ``"saved"`` node per tensor saved for backward (see :func:`capture`).

        Returns
        -------
        Graph
        """
        outs: Any = outputs[0] if len(outputs) == 1 else list(outputs)
        return self._build(outs, params, saved)

    def _build(self, outputs: Any, params: Any, saved: bool) -> Graph:
        # Upward import: building a Graph is capture's job, one layer above the recorder.
        from ._capture import build

        return build(
            outputs, params=params, module=self.root, frame=user_frame(), recorder=self, saved=saved
        )
