"""Names for tensors: the user's own variables, parameter paths, module class names.

A graph reads best in the words of the code that built it, so leaves and outputs are
named after the user's variables where one unambiguous name refers to them (found in
the first frame outside torch and gradwidget), and parameters after their dotted path
in the module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

import torch

_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(__file__)


def user_frame() -> FrameType | None:
    """The innermost frame that is neither torch's nor gradwidget's own code.

    Returns
    -------
    frame or None
        None when every frame on the stack is torch's or gradwidget's.
    """
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


def names_in_frame(frame: FrameType | None, tensors: list[torch.Tensor]) -> dict[int, str]:
    """Variable names that unambiguously refer to each tensor in ``frame``.

    Parameters
    ----------
    frame : frame or None
        Where to look: its locals, then its globals.
    tensors : list of torch.Tensor
        The tensors to name.

    Returns
    -------
    dict of int to str
        ``id(tensor) -> name`` for each tensor that exactly one public name refers to;
        a tensor with no such name, or with several, is left out.
    """
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


def check_module(module: Any) -> None:
    """Raise TypeError unless ``module`` is a ``torch.nn.Module`` (or None)."""
    if module is not None and not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}.")


def leaf_names(
    params: Mapping[str, torch.Tensor] | None, module: torch.nn.Module | None
) -> tuple[dict[int, str], dict[int, str], dict[str, str]]:
    """Names and owning module path by tensor id, and module class names by path.

    One ``named_modules()`` pass names parameters exactly as ``named_parameters()`` does
    (a shared parameter keeps its first name). Names in ``params`` win over the module's.
    """
    names: dict[int, str] = {}
    owners: dict[int, str] = {}
    types: dict[str, str] = {}
    check_module(module)
    if module is not None:
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


def _public_scopes(frame: FrameType) -> list[Mapping[str, Any]]:
    scopes = [frame.f_locals]
    if frame.f_globals is not frame.f_locals:
        scopes.append(frame.f_globals)
    return scopes


def owner_in_frame(
    frame: FrameType | None, leaves: list[torch.Tensor]
) -> tuple[torch.nn.Module | None, dict[int, str]]:
    """The modules in ``frame`` whose parameters are among ``leaves``, and what they name.

    Looks through the frame's locals and globals for ``nn.Module``s holding the leaves.

    Returns
    -------
    module, names
        ``module``: the one module that owns every parameter leaf (a graph of one model;
        then name its leaves as ``module=`` would: ``0.weight``), else None and ``names``:
        ``id(leaf) -> "var.path"`` for leaves exactly one outermost module variable holds
        (``model.0.weight``, ``head.bias``). Leaves held ambiguously are left out.
    """
    if frame is None or not leaves:
        return None, {}
    wanted = {id(t) for t in leaves}
    found: list[tuple[str, torch.nn.Module, dict[int, str]]] = []
    seen: dict[int, str] = {}  # id(module) -> the first variable naming it
    clash: set[int] = set()  # modules that several variables name
    for scope in _public_scopes(frame):
        for var, v in list(scope.items()):
            if var.startswith("_") or not isinstance(v, torch.nn.Module):
                continue
            if id(v) in seen:
                if seen[id(v)] != var:
                    clash.add(id(v))
                continue
            seen[id(v)] = var
            held = {id(p): n for n, p in v.named_parameters() if id(p) in wanted}
            if held:
                found.append((var, v, held))
    if not found:
        return None, {}
    owned = set().union(*(set(h) for _, _, h in found))
    covering = [(m, h) for _, m, h in found if len(h) == len(owned)]
    if covering:
        # The smallest module that holds them all: a wrapper (DDP, a LightningModule)
        # holding the same parameters adds nothing but a prefix.
        mod, _ = min(covering, key=lambda c: sum(1 for _ in c[0].parameters()))
        return mod, {}
    names: dict[int, str] = {}
    shared: set[int] = set()
    for i, (var, mod, held) in enumerate(found):
        inside = [other for j, (_, other, h) in enumerate(found) if j != i and set(held) <= set(h)]
        if any(mod in set(o.modules()) for o in inside) or id(mod) in clash:
            continue  # a submodule of another candidate, or one object under two names
        for pid, path in held.items():
            if pid in names or pid in shared:
                names.pop(pid, None)  # two unrelated modules share it: ambiguous
                shared.add(pid)
                continue
            names[pid] = f"{var}.{path}"
    return None, names
