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
