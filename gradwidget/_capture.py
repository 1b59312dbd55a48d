"""Autograd walk (iterative) and forward recording -> Graph."""

from __future__ import annotations

import os
import re
import sys
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ._graph import Graph, ModuleInfo, Node, SavedTensor

_BACKWARD_SUFFIX = re.compile(r"Backward\d*$")
_ACCUMULATE = "torch::autograd::AccumulateGrad"
_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(__file__)


# ---- the walk --------------------------------------------------------------------------
def walk(roots: Iterable[Any]) -> list[Any]:
    """Autograd nodes reachable from ``roots``, in forward (topological) order.

    Iterative post-order DFS following ``next_functions`` in their order, so the same
    structure always gives the same order (what makes ids stable), and a chain of any
    length walks without RecursionError.
    """
    order: list[Any] = []
    seen: set[Any] = set()
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
                stack.pop()
                order.append(fn)
    return order


def op_name(fn: Any) -> str:
    """``MulBackward0`` for an autograd node (custom Functions included)."""
    name = fn.name()
    return name.rsplit("::", 1)[-1]


def short_label(op: str) -> str:
    """``AddmmBackward0`` -> ``Addmm``: the forward op a learner recognises."""
    short = _BACKWARD_SUFFIX.sub("", op)
    return short or op


# ---- saved tensors ----------------------------------------------------------------------
_saved_attr_cache: dict[type, tuple[str, ...]] = {}


def _saved_attrs(fn: Any) -> tuple[str, ...]:
    cls = type(fn)
    names = _saved_attr_cache.get(cls)
    if names is None:
        names = tuple(
            a
            for a in dir(fn)
            if a.startswith("_saved_") and not a.endswith(("sym_sizes", "sym_strides"))
        )
        _saved_attr_cache[cls] = names
    return names


def _as_saved(attr: str, t: torch.Tensor) -> tuple[SavedTensor, tuple[int, int]]:
    nbytes = t.element_size() * t.nelement()
    return (
        SavedTensor(attr, tuple(t.shape), str(t.dtype).removeprefix("torch."), nbytes),
        (t.untyped_storage().data_ptr(), nbytes),
    )


class FreedGraphError(ValueError):
    pass


def read_saved(fn: Any) -> list[tuple[SavedTensor, tuple[int, int]]]:
    """Tensors ``fn`` keeps for backward, with a storage key to count each storage once.

    Raises
    ------
    FreedGraphError
        When backward already freed them.
    """
    out = []
    for attr in _saved_attrs(fn):
        try:
            val = getattr(fn, attr)
        except RuntimeError as err:
            raise FreedGraphError(
                "This graph was already freed by backward(), so its saved tensors are gone. "
                "Capture before calling backward(), or call backward(retain_graph=True)."
            ) from err
        vals = val if isinstance(val, (tuple, list)) else (val,)
        for i, v in enumerate(vals):
            if isinstance(v, torch.Tensor):
                name = attr.removeprefix("_saved_") + (f"[{i}]" if len(vals) > 1 else "")
                out.append(_as_saved(name, v))
    return out


# ---- naming -------------------------------------------------------------------------------
def user_frame():
    """The innermost frame that is neither torch's nor gradwidget's own code."""
    f = sys._getframe(1)
    while f is not None:
        fname = f.f_code.co_filename
        if not (
            fname.startswith(_TORCH_DIR)
            or fname.startswith(_OWN_DIR)
            or fname.startswith("<frozen")
        ):
            return f
        f = f.f_back
    return None


def _names_in_frame(frame, tensors: list[torch.Tensor]) -> dict[int, str]:
    """Variable names that unambiguously refer to each tensor in ``frame``."""
    if frame is None or not tensors:
        return {}
    wanted = {id(t) for t in tensors}
    found: dict[int, set[str]] = {}
    for scope in (frame.f_locals, frame.f_globals):
        for k, v in list(scope.items()):
            if isinstance(v, torch.Tensor) and id(v) in wanted and not k.startswith("_"):
                found.setdefault(id(v), set()).add(k)
    return {i: next(iter(ns)) for i, ns in found.items() if len(ns) == 1}


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


# ---- recording ---------------------------------------------------------------------------
@dataclass
class OpMeta:
    """What recording learned about one autograd node during forward."""

    module: str | None
    source: str | None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    saved: list = field(default_factory=list)


def _source_of(frame) -> str | None:
    if frame is None:
        return None
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


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

    Parameters
    ----------
    module : torch.nn.Module, optional
        Names modules and parameters by their dotted path. Without it the outermost module
        called inside the block is used as the root.

    Examples
    --------
    >>> with gradwidget.record(model) as rec:
    ...     loss = model(x).sum()
    >>> rec.graph  # or rec.graph_of(loss)
    """

    def __init__(self, module: torch.nn.Module | None = None):
        self.module = module
        self.root: torch.nn.Module | None = None
        self.meta: dict[Any, OpMeta] = {}
        self._produced: dict[Any, Any] = {}  # grad_fn -> weakref to the tensor it produced
        self._stack: list[str | None] = []
        self._paths: dict[int, str] = {}
        self._types: dict[str, str] = {}
        self._hooks: list[Any] = []
        self._mode: _RecordMode | None = None
        if module is not None:
            self._adopt_root(module)

    def __repr__(self) -> str:
        return f"<gradwidget.record: {len(self.meta)} ops>"

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

        self._hooks = [
            nn_module.register_module_forward_pre_hook(self._pre),
            nn_module.register_module_forward_hook(self._post, always_call=True),
        ]
        self._mode = _RecordMode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._mode is not None:
            self._mode.__exit__(*exc)
            self._mode = None
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._stack.clear()

    def _note(self, t: torch.Tensor) -> None:
        """Annotate ``t.grad_fn`` and every not-yet-seen node behind it."""
        root = t.grad_fn
        module = self._stack[-1] if self._stack else None
        if root not in self.meta:
            src = _source_of(user_frame())
            todo = [root]
            while todo:
                fn = todo.pop()
                if fn in self.meta or fn.name() == _ACCUMULATE:
                    continue
                self.meta[fn] = OpMeta(module, src, saved=read_saved(fn))
                todo.extend(c for c, _ in fn.next_functions if c is not None)
        m = self.meta.get(root)
        if m is not None:
            m.shape = tuple(t.shape)
            m.dtype = str(t.dtype).removeprefix("torch.")
        self._produced[root] = weakref.ref(t)

    def outputs(self) -> list[torch.Tensor]:
        """Tensors produced in the block that no other recorded op consumed."""
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
        return self.graph_of(*outs)

    def graph_of(self, *outputs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None):
        """The Graph behind ``outputs``, with what recording learned."""
        frame = user_frame()
        return _build(list(outputs), params=params, module=self.root, frame=frame, recorder=self)


# ---- building -----------------------------------------------------------------------------
def _check_outputs(outputs) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    elif isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    elif isinstance(outputs, Sequence) and not isinstance(outputs, (str, bytes)):
        outputs = list(outputs)
    else:
        raise TypeError(
            f"capture() needs a torch.Tensor or a sequence of tensors, got {type(outputs).__name__}."
        )
    if not outputs:
        raise ValueError("capture() got an empty sequence: pass at least one tensor.")
    for i, t in enumerate(outputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"Output {i} is a {type(t).__name__}, not a torch.Tensor.")
        if not t.requires_grad:
            raise ValueError(
                f"Output {i} (shape {_shape_text(t.shape)}) does not require grad, so it has no "
                "autograd graph. Set requires_grad=True on the inputs you want gradients for "
                "(e.g. w = torch.randn(3, requires_grad=True)) and compute it outside no_grad()."
            )
    return outputs


def _leaf_names(params, module) -> tuple[dict[int, str], dict[int, str]]:
    """(names by tensor id, owning module path by tensor id) from params/module."""
    names: dict[int, str] = {}
    owners: dict[int, str] = {}
    if module is not None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}.")
        for n, p in module.named_parameters():
            names[id(p)] = n
            if "." in n:
                owners[id(p)] = n.rsplit(".", 1)[0]
    if params is not None:
        if not isinstance(params, Mapping):
            raise TypeError("params must be a mapping of name -> tensor.")
        names.update({id(p): str(n) for n, p in params.items()})
    return names, owners


def _build(outputs, *, params=None, module=None, frame=None, recorder=None) -> Graph:
    outputs = _check_outputs(outputs)
    meta = recorder.meta if recorder is not None else {}
    explicit, owners = _leaf_names(params, module)
    order = walk(t.grad_fn for t in outputs)

    leaves = [fn.variable for fn in order if fn.name() == _ACCUMULATE]
    unnamed = [t for t in leaves + outputs if id(t) not in explicit]
    inferred = _names_in_frame(frame, unnamed)

    nodes: list[Node] = []
    edges: list[tuple[str, str]] = []
    fn_ids: dict[Any, str] = {}
    counters: dict[tuple[str | None, str], int] = {}
    used: set[str] = set()
    storages: dict[tuple[int, int], int] = {}

    def unique(base: str) -> str:
        uid, k = base, 1
        while uid in used:
            uid, k = f"{base}~{k}", k + 1
        used.add(uid)
        return uid

    for fn in order:
        op = op_name(fn)
        if fn.name() == _ACCUMULATE:
            t = fn.variable
            name = explicit.get(id(t))
            param_module = owners.get(id(t))
            if name is None:
                name = inferred.get(id(t))
            nid = unique(f"leaf:{name}" if name else f"leaf#{len(nodes)}")
            label = f"{name or 'leaf'}\n{_shape_text(t.shape)}"
            nodes.append(
                Node(
                    nid,
                    "leaf",
                    label,
                    len(nodes),
                    shape=tuple(t.shape),
                    dtype=str(t.dtype).removeprefix("torch."),
                    module=param_module,
                    name=name,
                )
            )
        else:
            m = meta.get(fn)
            if m is not None:
                saved_pairs = m.saved
            else:
                saved_pairs = read_saved(fn)
            mod = m.module if m else None
            key = (mod, op)
            k = counters.get(key, 0)
            counters[key] = k + 1
            nid = unique(f"{mod}/{op}#{k}" if mod else f"{op}#{k}")
            label = short_label(op)
            shape = m.shape if m else None
            if shape is not None:
                label += f"\n{_shape_text(shape)}"
            for _, skey in saved_pairs:
                storages[skey] = skey[1]
            nodes.append(
                Node(
                    nid,
                    "op",
                    label,
                    len(nodes),
                    op=op,
                    shape=shape,
                    dtype=m.dtype if m else None,
                    module=mod,
                    source=m.source if m else None,
                    saved=[s for s, _ in saved_pairs],
                )
            )
        fn_ids[fn] = nid
        for child, _ in fn.next_functions:
            if child is not None:
                edges.append((fn_ids[child], nid))

    for i, t in enumerate(outputs):
        name = explicit.get(id(t)) or inferred.get(id(t))
        nid = unique(f"output:{name}" if name else f"output#{i}")
        label = f"{name or 'output'}\n{_shape_text(t.shape)}"
        base_shape = None
        if t._is_view() and t._base is not None:
            base_shape = tuple(t._base.shape)
            label += f"\nview of {_shape_text(base_shape)}"
        nodes.append(
            Node(
                nid,
                "output",
                label,
                len(nodes),
                shape=tuple(t.shape),
                dtype=str(t.dtype).removeprefix("torch."),
                name=name,
                base_shape=base_shape,
            )
        )
        if t.grad_fn is not None:
            edges.append((fn_ids[t.grad_fn], nid))

    modules = {}
    if recorder is not None:
        modules = {p: ModuleInfo(p, ty) for p, ty in recorder._types.items() if p}
    elif module is not None:
        modules = {p: ModuleInfo(p, type(m).__name__) for p, m in module.named_modules() if p}
    used_modules = {n.module for n in nodes if n.module}
    modules = {
        p: mi
        for p, mi in modules.items()
        if any(u == p or u.startswith(p + ".") for u in used_modules)
    }
    return Graph(nodes, edges, modules=modules, saved_bytes=sum(storages.values()))


def capture(
    outputs,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    module: torch.nn.Module | None = None,
) -> Graph:
    """Capture the autograd graph behind one or more tensors, after the fact.

    Parameters
    ----------
    outputs : torch.Tensor or sequence of torch.Tensor
        The tensors whose history to capture (e.g. the loss).
    params : mapping of str to torch.Tensor, optional
        Names for leaf tensors.
    module : torch.nn.Module, optional
        Names leaves by ``module.named_parameters()``.

    Without ``params`` or ``module``, leaves are named from the caller's variables where one
    unambiguous name refers to them, else by shape.

    Returns
    -------
    Graph

    Raises
    ------
    TypeError
        ``outputs`` is not a tensor or a sequence of tensors.
    ValueError
        A tensor does not require grad, the sequence is empty, or backward already freed
        the graph (capture first, or use ``retain_graph=True``).
    """
    return _build(outputs, params=params, module=module, frame=user_frame())
