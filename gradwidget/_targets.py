"""What a watcher watches: a module or tensors, resolved and named against the drawn Graph."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ._graph import Graph
from ._names import names_in_frame, user_frame


class Targets:
    """A watch target resolved: the module, or leaf tensors and non-leaf roots, with names.

    Parameters
    ----------
    graph : Graph
        The drawn graph; leaves are matched to its nodes by parameter/variable name.
    target : nn.Module, tensor, sequence or mapping of tensors
    names : mapping, optional
        ``id(tensor) -> name`` for tensors given in a list (the caller's variable names).
    """

    def __init__(self, graph: Graph, target: Any, names: Mapping[int, str] | None = None):
        self.graph = graph
        self.module: torch.nn.Module | None = None
        self.leaves: list[torch.Tensor] = []
        #: Non-leaf tensors (e.g. a loss before backward): their graph is watched once.
        self.pending_roots: list[torch.Tensor] = []
        self.leaf_name: dict[int, str] = {}
        #: The module runs compiled (``torch.compile(m)`` or ``m.compile()``): its forward
        #: must not be hooked, and its autograd graph does not match the eager one drawn.
        self.compiled = False
        self._params: list[torch.Tensor] | None = None
        self._resolve(target, names)
        #: Leaf tensor id -> node id, by parameter/variable name (robust to re-ordering).
        by_name = {n.name: n.id for n in graph.nodes if n.kind == "leaf" and n.name}
        self.leaf_node = {
            tid: by_name.get(name, f"leaf:{name}") for tid, name in self.leaf_name.items()
        }

    def _resolve(self, target: Any, names: Mapping[int, str] | None) -> None:
        if isinstance(target, torch.nn.Module):
            self.module = target
            eager = eager_module(target)
            self.compiled = eager is not target or is_compiled(target)
            for n, p in eager.named_parameters():
                self.leaf_name[id(p)] = n
            return
        if isinstance(target, torch.Tensor):
            items: list[tuple[str | None, torch.Tensor]] = [(None, target)]
        elif isinstance(target, Mapping):
            items = [(str(k), v) for k, v in target.items()]
        elif isinstance(target, Iterable) and not isinstance(target, (str, bytes)):
            items = [(None, v) for v in target]
        else:
            raise TypeError(
                "watch() needs an nn.Module, a tensor, or a list/dict of tensors; "
                f"got {type(target).__name__}."
            )
        if not items:
            raise ValueError("watch() got nothing to watch: pass a module or some tensors.")
        for i, (_, t) in enumerate(items):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"Item {i} to watch is a {type(t).__name__}, not a tensor.")
            if not t.requires_grad:
                raise ValueError(
                    f"Tensor {i} to watch (shape {tuple(t.shape)}) does not require grad, so "
                    "it never gets a gradient. Set requires_grad=True on it."
                )
        given = dict(names or {})
        for name, t in items:
            if name is not None:
                given[id(t)] = name
        for _, t in items:
            if t.grad_fn is None:
                self.leaves.append(t)
                if id(t) in given:
                    self.leaf_name[id(t)] = given[id(t)]
            else:
                self.pending_roots.append(t)

    def hooked(self) -> list[Any]:
        """What gets hooked: the module, or the leaf tensors."""
        return [self.module] if self.module is not None else list(self.leaves)

    def all_leaves(self) -> list[torch.Tensor]:
        """The tensors whose ``.grad`` a sample reads: trainable parameters, or the leaves."""
        if self.module is not None:
            # Walking a big model's module tree costs ~1 ms: keep its parameter list (runs
            # call refresh(); requires_grad is read each time, so freezing shows at once).
            if self._params is None:
                self._params = list(self.module.parameters())
            return [p for p in self._params if p.requires_grad]
        return list(self.leaves)

    def refresh(self) -> None:
        """Look the module's parameters up again (a run starts: the model may have grown)."""
        self._params = None

    def leaf_id(self, t: torch.Tensor) -> str:
        """The node id statistics of leaf ``t`` go under."""
        nid = self.leaf_node.get(id(t))
        return nid if nid is not None else f"leaf#{id(t)}"

    def name_of(self, nid: str, t: torch.Tensor) -> str:
        """The name a lint shows for node ``nid`` (tensor ``t``)."""
        if nid in self.graph:
            n = self.graph[nid]
            return n.name or n.label.split("\n", 1)[0]
        return self.leaf_name.get(id(t), nid)

    def describe(self, nid: str, g: torch.Tensor) -> dict[str, Any]:
        """The descriptive fields of one node's statistics."""
        if nid in self.graph:
            n = self.graph[nid]
            return {
                "name": n.name or n.label.split("\n", 1)[0],
                "kind": n.kind,
                "op": n.op,
                "index": n.index,
                "shape": list(g.shape),
                "module": n.module,
            }
        return {
            "name": nid.removeprefix("leaf:"),
            "kind": "leaf",
            "op": None,
            "index": -1,
            "shape": list(g.shape),
            "module": None,
        }


def eager_module(module: torch.nn.Module) -> torch.nn.Module:
    """The module ``torch.compile(module)`` wraps (itself when not wrapped)."""
    inner = getattr(module, "_orig_mod", None)
    return inner if isinstance(inner, torch.nn.Module) else module


def is_compiled(module: torch.nn.Module) -> bool:
    """True for ``torch.compile(m)`` and for a module after ``m.compile()``."""
    return eager_module(module) is not module or (
        getattr(module, "_compiled_call_impl", None) is not None
    )


def caller_names(tensors: Iterable[Any]) -> dict[int, str]:
    """Names the user's variables give ``tensors`` (for watch([w, b]))."""
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    with contextlib.suppress(Exception):
        return names_in_frame(user_frame(), ts)
    return {}
