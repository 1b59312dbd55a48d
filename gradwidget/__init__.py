"""gradwidget: see PyTorch autograd in Jupyter.

The public names load on first use (PEP 562), so ``import gradwidget._graph`` (or a
``capture()`` without any widget) does not pay for the widget stack (anywidget,
traitlets, graphviz).
"""

import importlib

#: Public name -> the private module that defines it.
_EXPORTS = {
    "AttachedWidget": "_attach",
    "GradWidget": "_widget",
    "Graph": "_graph",
    "JacobianWidget": "_jacobian",
    "LintConfig": "_lint",
    "Publication": "_publish",
    "ModuleInfo": "_graph",
    "Node": "_graph",
    "SavedTensor": "_graph",
    "Watcher": "_watch",
    "attach": "_attach",
    "capture": "_capture",
    "jacobian": "_jacobian",
    "publish": "_publish",
    "record": "_record",
    "show": "_widget",
}

__all__ = [
    "AttachedWidget",
    "GradWidget",
    "Graph",
    "JacobianWidget",
    "LintConfig",
    "ModuleInfo",
    "Node",
    "Publication",
    "SavedTensor",
    "Watcher",
    "attach",
    "capture",
    "jacobian",
    "publish",
    "record",
    "show",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    # Private modules stay reachable as attributes, as when this file imported them all
    # (``gradwidget._widget.STATIC_FALLBACK`` is a documented switch).
    if name.startswith("_") and not name.startswith("__"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython):
    """``%load_ext gradwidget`` registers the ``%%train`` cell magic."""
    from ._magic import load_ipython_extension as load

    load(ipython)
