"""gradwidget: see PyTorch autograd in Jupyter."""

from ._capture import capture, record
from ._graph import Graph, ModuleInfo, Node, SavedTensor
from ._jacobian import JacobianWidget, jacobian
from ._lint import LintConfig
from ._watch import Watcher
from ._widget import GradWidget, show

__all__ = [
    "GradWidget",
    "Graph",
    "JacobianWidget",
    "LintConfig",
    "ModuleInfo",
    "Node",
    "SavedTensor",
    "Watcher",
    "capture",
    "jacobian",
    "record",
    "show",
]
__version__ = "0.1.0"


def load_ipython_extension(ipython):
    """``%load_ext gradwidget`` registers the ``%%train`` cell magic."""
    from ._magic import load_ipython_extension as load

    load(ipython)
