"""gradwidget: see PyTorch autograd in Jupyter."""

from ._capture import capture, record
from ._graph import Graph, ModuleInfo, Node, SavedTensor
from ._widget import GradWidget, show

__all__ = ["GradWidget", "Graph", "ModuleInfo", "Node", "SavedTensor", "capture", "record", "show"]
__version__ = "0.1.0"
