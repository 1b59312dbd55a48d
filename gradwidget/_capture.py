"""Capture: the autograd graph behind some tensors, as a :class:`Graph`.

What each capture knows:

* ``capture()`` (post hoc): every reachable autograd node, each op's output shape/dtype
  (from the node's input metadata, which survives backward), the shapes/bytes of the
  tensors it saved for backward (gone once backward freed the graph).
* a :class:`record` block adds the module path and the user's ``file:line`` per op, and
  the saved tensors as they were right after each op ran, so they survive backward.
* ``saved=True`` adds one ``"saved"`` node per saved tensor (edge into its op), like
  torchviz's ``show_saved``; off by default because it roughly doubles a view's size.

Reading the autograd graph is :mod:`._autograd`'s job, naming tensors :mod:`._names`'s;
this module turns what they read into nodes with stable ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._autograd import (
    drain,
    dtype_text,
    keep_deep_graph,
    output_meta,
    read_saved,
    type_info,
    walk_depth,
)
from ._graph import Graph, ModuleInfo, Node, module_ancestors, shape_text
from ._names import leaf_names, names_in_frame, owner_in_frame, user_frame
from ._record import record


def _check_outputs(outputs: Any) -> list[torch.Tensor]:
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


def _op_label(short: str, shape: tuple[int, ...] | None, n_out: int) -> str:
    label = short
    if shape is not None:
        label += "\n" + shape_text(shape)
        if n_out > 1:
            label += f" +{n_out - 1}"
    return label


def build(
    outputs: Any,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    module: torch.nn.Module | None = None,
    frame: Any = None,
    recorder: record | None = None,
    saved: bool = False,
) -> Graph:
    """The Graph behind ``outputs``; what :func:`capture` and :class:`record` return.

    ``frame`` is where leaves and outputs get their variable names; ``recorder`` adds
    what a record block learned (module, source line, saved tensors) per op.
    """
    outputs = _check_outputs(outputs)
    meta = recorder.meta if recorder is not None else {}
    drain()
    order, depth = walk_depth(t.grad_fn for t in outputs)
    keep_deep_graph(order, depth, outputs)
    infos = [type_info(fn) for fn in order]

    leaves = [fn.variable for fn, info in zip(order, infos, strict=True) if info.is_accumulate]
    found: dict[int, str] = {}
    if module is None and params is None:
        # No module given: the models in the caller's namespace that hold these leaves.
        module, found = owner_in_frame(frame, leaves)
    explicit, owners, module_types = leaf_names(params, module)
    explicit = {**found, **explicit}
    unnamed = [t for t in leaves + outputs if id(t) not in explicit]
    inferred = names_in_frame(frame, unnamed)

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
                    dtype=dtype_text(t.dtype),
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
                    _op_label(short, shape, n_out),
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
                dtype=dtype_text(t.dtype),
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

    Without ``params`` or ``module``, parameters are named after the model in the caller's
    namespace that holds them (``0.weight`` when one module holds them all, else
    ``model.0.weight``, ``head.bias``), other leaves after the caller's variables where one
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
    return build(outputs, params=params, module=module, frame=user_frame(), saved=saved)
