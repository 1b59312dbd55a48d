"""Autograd walk (iterative) and forward recording -> Graph.

What each capture knows:

* ``capture()`` (post hoc): every reachable autograd node, each op's output shape/dtype
  (from the node's input metadata, which survives backward), the shapes/bytes of the
  tensors it saved for backward (read from its ``_saved_*`` attributes, or
  ``ctx.saved_tensors`` for custom Functions; gone once backward freed the graph).
* ``record()`` adds the module path and the user's ``file:line`` per op, and reads the
  saved tensors right after each op ran, so they are known even after backward. Reading
  the attributes (rather than ``saved_tensors_hooks``) keeps their names (``mat1``,
  ``result``...) and leaves the user's own pack/unpack hooks alone.
* ``saved=True`` adds one ``"saved"`` node per saved tensor (edge into its op), like
  torchviz's ``show_saved``; off by default because it roughly doubles a view's size.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ._graph import Graph, ModuleInfo, Node, SavedTensor, module_ancestors, shape_text

_BACKWARD_SUFFIX = re.compile(r"Backward\d*$")
_ACCUMULATE = "torch::autograd::AccumulateGrad"
_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(__file__)
_CUSTOM_FN = torch.autograd.function.BackwardCFunction


# ---- the walk --------------------------------------------------------------------------
def walk(roots: Iterable[Any]) -> list[Any]:
    """Autograd nodes reachable from ``roots``, in forward (topological) order.

    Iterative post-order DFS following ``next_functions`` in their order, so the same
    structure always gives the same order (what makes ids stable), and a chain of any
    length walks without RecursionError.
    """
    return _walk(roots)[0]


def _walk(roots: Iterable[Any]) -> tuple[list[Any], int]:
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
_DEEP = 5_000
_pending: list[list[Any]] = []


def _drain(phase: str = "stop", info: Any = None) -> None:
    if phase != "stop":
        return
    while _pending:
        nodes = _pending.pop()
        while nodes:
            nodes.pop()  # forward order: the last one is the root
    if _drain in gc.callbacks:
        gc.callbacks.remove(_drain)


class _RootFirstRelease:
    """Holds a deep graph's nodes until its outputs die, then queues them for :func:`_drain`."""

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
            if _drain not in gc.callbacks:
                gc.callbacks.append(_drain)


def op_name(fn: Any) -> str:
    """``MulBackward0`` for an autograd node (custom Functions included)."""
    return _type_info(fn)[0]


def short_label(op: str) -> str:
    """``AddmmBackward0`` -> ``Addmm``: the forward op a learner recognises."""
    short = _BACKWARD_SUFFIX.sub("", op)
    return short or op


# Per node type: (op name, short label, is AccumulateGrad, saved attribute names).
# Node names and saved attributes are fixed per C++/custom-Function class, so one dir()
# per type instead of one per node keeps capture cheap on big graphs.
_type_cache: dict[type, tuple[str, str, bool, tuple[str, ...]]] = {}


def _type_info(fn: Any) -> tuple[str, str, bool, tuple[str, ...]]:
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
        info = (op, short_label(op), full == _ACCUMULATE, attrs)
        _type_cache[cls] = info
    return info


_dtype_texts: dict[torch.dtype, str] = {}


def _dtype_text(dtype: torch.dtype) -> str:
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
    return tuple(first.shape), _dtype_text(first.dtype), len(metas)


# ---- saved tensors ----------------------------------------------------------------------
class FreedGraphError(ValueError):
    """The graph's saved tensors were freed by backward()."""


_FREED_HINT = (
    "This graph was already freed by backward(), so the tensors it saved for backward are "
    "gone. Capture before calling backward(), or call backward(retain_graph=True)."
)


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
    return SavedTensor(attr, tuple(t.shape), _dtype_text(t.dtype), t.nbytes), key


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
    for attr in _type_info(fn)[3]:
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


# Attribute values that are never tensors (``None`` may be an undefined optional tensor).
_SCALARS = (bool, int, float, str, torch.dtype, torch.device, torch.layout)


def _not_a_tensor(fn: Any, attr: str) -> None:
    """Stop reading ``attr`` (e.g. a conv's ``_saved_stride``) on this node type."""
    cls = type(fn)
    op, short, is_acc, attrs = _type_cache[cls]
    _type_cache[cls] = (op, short, is_acc, tuple(a for a in attrs if a != attr))


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
    scopes = [frame.f_locals]
    if frame.f_globals is not frame.f_locals:
        scopes.append(frame.f_globals)
    for scope in scopes:
        for k, v in list(scope.items()):
            if id(v) in wanted and isinstance(v, torch.Tensor) and not k.startswith("_"):
                found.setdefault(id(v), set()).add(k)
    return {i: next(iter(ns)) for i, ns in found.items() if len(ns) == 1}


# ---- recording ---------------------------------------------------------------------------
@dataclass
class OpMeta:
    """What recording learned about one autograd node during forward."""

    module: str | None
    source: str | None
    saved: list = field(default_factory=list)


def _source_of(frame) -> str | None:
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
        if module is not None and not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}.")
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
        # Newest first (root first): see _RootFirstRelease for why the order matters.
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
                if fn in self.meta or _type_info(fn)[2]:
                    continue
                # Nodes made before the block belong to no recorded module or line.
                if start >= 0 and fn._sequence_nr() < start:
                    continue
                self.meta[fn] = OpMeta(module, src, saved=read_saved(fn))
                todo.extend(c for c, _ in fn.next_functions if c is not None)
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
        return _build(outs, module=self.root, frame=user_frame(), recorder=self)

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
        """
        outs: Any = outputs[0] if len(outputs) == 1 else list(outputs)
        return _build(
            outs, params=params, module=self.root, frame=user_frame(), recorder=self, saved=saved
        )


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
            "capture() needs a torch.Tensor or a sequence of tensors, "
            f"got {type(outputs).__name__}."
        )
    if not outputs:
        raise ValueError("capture() got an empty sequence: pass at least one tensor.")
    for i, t in enumerate(outputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"Output {i} is a {type(t).__name__}, not a torch.Tensor.")
        if not t.requires_grad:
            raise ValueError(
                f"Output {i} (shape {shape_text(t.shape)}) does not require grad, so it has no "
                "autograd graph. Set requires_grad=True on the inputs you want gradients for "
                "(e.g. w = torch.randn(3, requires_grad=True)) and compute it outside no_grad()."
            )
    return outputs


def _leaf_names(params, module) -> tuple[dict[int, str], dict[int, str], dict[str, str]]:
    """Names and owning module path by tensor id, and module class names by path.

    One ``named_modules()`` pass names parameters exactly as ``named_parameters()`` does
    (a shared parameter keeps its first name).
    """
    names: dict[int, str] = {}
    owners: dict[int, str] = {}
    types: dict[str, str] = {}
    if module is not None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}.")
        for path, mod in module.named_modules():
            types[path] = type(mod).__name__
            for pname, p in mod._parameters.items():
                if p is not None and id(p) not in names:
                    names[id(p)] = f"{path}.{pname}" if path else pname
                    if path:
                        owners[id(p)] = path
    if params is not None:
        if not isinstance(params, Mapping):
            raise TypeError("params must be a mapping of name -> tensor.")
        names.update({id(p): str(n) for n, p in params.items()})
    return names, owners, types


def _build(outputs, *, params=None, module=None, frame=None, recorder=None, saved=False) -> Graph:
    outputs = _check_outputs(outputs)
    meta = recorder.meta if recorder is not None else {}
    explicit, owners, module_types = _leaf_names(params, module)
    _drain()
    order, depth = _walk(t.grad_fn for t in outputs)
    if depth >= _DEEP:
        _RootFirstRelease(order, outputs)
    infos = [_type_info(fn) for fn in order]

    leaves = [fn.variable for fn, info in zip(order, infos, strict=True) if info[2]]
    unnamed = [t for t in leaves + outputs if id(t) not in explicit]
    inferred = _names_in_frame(frame, unnamed)

    nodes: list[Node] = []
    edges: list[tuple[str, str]] = []
    fn_ids: dict[Any, str] = {}
    counters: dict[tuple[str | None, str], int] = {}
    used: set[str] = set()
    storages: dict[Any, int] = {}
    n_unnamed = 0

    def unique(base: str) -> str:
        uid, k = base, 1
        while uid in used:
            uid, k = f"{base}~{k}", k + 1
        used.add(uid)
        return uid

    for fn, (op, short, is_leaf, _) in zip(order, infos, strict=True):
        if is_leaf:
            t = fn.variable
            name = explicit.get(id(t)) or inferred.get(id(t))
            if name:
                nid = unique(f"leaf:{name}")
            else:
                nid = unique(f"leaf#{n_unnamed}")
                n_unnamed += 1
            shape = tuple(t.shape)
            nodes.append(
                Node(
                    nid,
                    "leaf",
                    f"{name or 'leaf'}\n{shape_text(shape)}",
                    len(nodes),
                    shape=shape,
                    dtype=_dtype_text(t.dtype),
                    module=owners.get(id(t)),
                    name=name,
                )
            )
        else:
            m = meta.get(fn)
            saved_pairs = m.saved if m is not None else read_saved(fn)
            mod = m.module if m is not None else None
            key = (mod, op)
            k = counters.get(key, 0)
            counters[key] = k + 1
            nid = unique(f"{mod}/{op}#{k}" if mod else f"{op}#{k}")
            shape, dtype, n_out = output_meta(fn)
            label = short
            if shape is not None:
                label += "\n" + shape_text(shape)
                if n_out > 1:
                    label += f" +{n_out - 1}"
            for s, skey in saved_pairs:
                storages[skey[0]] = skey[1]
                if saved:
                    sid = unique(f"{nid}/saved:{s.attr}")
                    nodes.append(
                        Node(
                            sid,
                            "saved",
                            f"{s.attr}\n{shape_text(s.shape)}",
                            len(nodes),
                            shape=s.shape,
                            dtype=s.dtype,
                            module=mod,
                            name=s.attr,
                        )  # its bytes stay on the op only, so sums count them once
                    )
                    edges.append((sid, nid))
            nodes.append(
                Node(
                    nid,
                    "op",
                    label,
                    len(nodes),
                    op=op,
                    shape=shape,
                    dtype=dtype,
                    module=mod,
                    source=m.source if m is not None else None,
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
        label = f"{name or 'output'}\n{shape_text(t.shape)}"
        base_shape = None
        if t._is_view() and t._base is not None:
            base_shape = tuple(t._base.shape)
            label += f"\nview of {shape_text(base_shape)}"
        nodes.append(
            Node(
                nid,
                "output",
                label,
                len(nodes),
                shape=tuple(t.shape),
                dtype=_dtype_text(t.dtype),
                name=name,
                base_shape=base_shape,
            )
        )
        if t.grad_fn is not None:
            edges.append((fn_ids[t.grad_fn], nid))

    types = recorder._types if recorder is not None else module_types
    used_modules: set[str] = set()
    for p in {n.module for n in nodes if n.module}:
        used_modules.update(module_ancestors(p))
    # Definition order (named_modules); Graph() adds any path seen only on a node.
    modules = {p: ModuleInfo(p, ty) for p, ty in types.items() if p in used_modules}
    return Graph(nodes, edges, modules=modules, saved_bytes=sum(storages.values()))


def capture(
    outputs,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    module: torch.nn.Module | None = None,
    saved: bool = False,
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
    saved : bool
        Also add one ``"saved"`` node per tensor an op keeps for backward, with an edge
        to that op (like torchviz's ``show_saved``). Either way every op lists them in
        ``Node.saved``.

    Without ``params`` or ``module``, leaves are named from the caller's variables where one
    unambiguous name refers to them, else by shape. Post-hoc capture knows each op's output
    shape and saved tensors, but not which module or source line ran it: use
    :class:`record` for that.

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
    return _build(outputs, params=params, module=module, frame=user_frame(), saved=saved)
