"""Python side of the graph widget: traits, views, loader, display (no browser)."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
import torch
import torch.nn as nn
import traitlets

import gradwidget as gw
from gradwidget import _loader, _view, _widget, _wire
from gradwidget._dot import view_of
from gradwidget._loader import VizLoader, get_loader


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)), torch.randn(4, 2)


def units(w: gw.GradWidget) -> int:
    return len(set(view_of(w.graph, w.depth, w.expanded).unit.values()))


def test_module_returning_a_structure_draws_every_returned_tensor():
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(3, 3)

        def forward(self, x):
            y = self.body(x)
            return {"a": y, "b": (y * 2, y.sum())}

    w = gw.GradWidget(Heads(), example_input=torch.randn(2, 3))
    assert [n.shape for n in w.graph.of_kind("output")] == [(2, 3), (2, 3), ()]
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        gw.GradWidget(frozen, example_input=torch.randn(1, 2))


def test_sources_module_tensor_graph(mlp):
    model, x = mlp
    from_module = gw.GradWidget(model, example_input=x)
    from_tensor = gw.GradWidget(model(x).sum())
    from_graph = gw.GradWidget(gw.capture(model(x).sum()))
    assert from_module.module is model
    assert from_module.dot.startswith("digraph")
    assert len(from_module.nodes["id"]) == len(from_module.graph)
    assert from_tensor.module is None and len(from_tensor.graph) == len(from_graph.graph)
    assert from_module.saved_bytes == from_module.graph.saved_bytes > 0
    assert set(from_module.modules) >= {"0", "1", "2"}


def test_clear_errors_for_bad_sources(mlp):
    model, _ = mlp
    with pytest.raises(ValueError, match="example_input"):
        gw.GradWidget(model)
    with pytest.raises(TypeError, match="GradWidget needs a Graph"):
        gw.GradWidget("not a graph")


def test_everything_is_in_the_first_state(mlp):
    """The comm_open carries the whole view: no follow-up messages when a widget is made."""
    model, x = mlp
    w = gw.GradWidget(model, example_input=x, depth=0)
    state = w.get_state()
    for key in ("dot", "nodes", "modules", "view_modules", "saved_bytes", "max_depth", "loader"):
        assert state[key] not in (None, "", {}), key
    assert state["loader"].endswith(get_loader().model_id)
    # Graphviz and the front-end code are not in the graph widget (they ship once, in the
    # loader): what a comm_open carries is the small stub plus this graph's packed data.
    assert len(state["_esm"]) < 2_000 and "_css" not in state
    assert comm_open_bytes(w) < 20_000


def comm_open_bytes(widget) -> int:
    """JSON text plus binary buffers, as ipywidgets sends a comm_open."""
    from ipywidgets.widgets.widget import _remove_buffers

    state, _, buffers = _remove_buffers(widget.get_state())
    return len(json.dumps(state).encode()) + sum(len(bytes(b)) for b in buffers)


def test_graph_data_is_packed_on_the_wire(mlp):
    """nodes/modules/dot stay plain Python values; the wire carries them zlib-packed."""
    model, x = mlp
    w = gw.GradWidget(model, example_input=x)
    state = w.get_state()
    for key in ("nodes", "modules", "dot"):
        assert set(state[key]) == {_wire.PACKED_KEY}, key
        assert _wire.unpack_json(state[key]) == getattr(w, key)
    assert isinstance(w.nodes["id"], list) and w.dot.startswith("digraph")
    assert _wire.unpack_json({"plain": 1}) == {"plain": 1}


def test_loader_carries_the_front_end_once():
    loader = get_loader()
    js = gzip.decompress(loader.frontend_gz)
    assert js == (_loader.STATIC / "widget.js").read_bytes()
    assert gzip.decompress(loader.css_gz) == (_loader.STATIC / "widget.css").read_bytes()
    assert len(loader.frontend_digest) == 64


def test_loader_is_one_per_kernel():
    a, b = get_loader(), get_loader()
    assert a is b and isinstance(a, VizLoader)
    assert len(a.viz_gz) > 100_000 and len(a.digest) == 64
    assert "VizLoader" in repr(a)


def test_depth_and_expanded_change_the_view(mlp):
    model, x = mlp
    w = gw.GradWidget(model, example_input=x, depth=0)
    # Three module boxes plus the output node.
    assert units(w) == 4 and set(w.view_modules.values()) == {"0", "1", "2"}
    collapsed_dot = w.dot
    w.expanded = ["0"]
    assert "0" not in w.view_modules.values()
    assert units(w) > 4 and w.dot != collapsed_dot
    w.expanded = []
    assert w.dot == collapsed_dot
    w.depth = 1
    assert w.view_modules == {} and units(w) == len(w.graph)


def test_selected_is_validated(mlp):
    model, x = mlp
    w = gw.GradWidget(model, example_input=x)
    node = w.graph.nodes[0].id
    w.selected = node
    assert w.selected == node
    with pytest.raises(traitlets.TraitError, match="No node with id"):
        w.selected = "no-such-node"
    w.selected = ""
    assert repr(w).startswith("<gradwidget.GradWidget: ")


def test_over_the_limit_view_shows_a_message(mlp, monkeypatch):
    model, x = mlp
    monkeypatch.setattr(_view, "MAX_VISIBLE_NODES", 5)
    w = gw.GradWidget(model, example_input=x, depth=1)
    assert w.dot == "" and "over the limit of 5" in w.view_error
    w.depth = 0  # three module boxes: under the limit again
    assert w.view_error == "" and w.dot.startswith("digraph")


def test_graph_displays_as_the_widget(mlp):
    model, x = mlp
    bundle = gw.capture(model(x).sum())._repr_mimebundle_()
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "text/plain" in bundle


def test_show_displays_one_widget_and_returns_none(mlp, monkeypatch):
    """``gw.show(x)`` as a cell's last line must not display the widget a second time."""
    model, x = mlp
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    assert gw.show(model, example_input=x, depth=0) is None
    assert len(shown) == 1 and isinstance(shown[0], gw.GradWidget)
    assert shown[0].depth == 0


def bundle_of(w) -> dict:
    bundle = w._repr_mimebundle_()
    return bundle[0] if isinstance(bundle, tuple) else bundle


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs the system Graphviz dot")
def test_static_fallback_picture(mlp, monkeypatch):
    """A saved notebook keeps an SVG of the view next to the widget view."""
    model, x = mlp
    w = gw.GradWidget(model, example_input=x)
    data = bundle_of(w)
    assert "application/vnd.jupyter.widget-view+json" in data and "text/plain" in data
    svg = data["image/svg+xml"]
    assert svg.startswith("<svg") and svg.count('class="node') == units(w)
    assert "<!--" not in svg and "<?xml" not in svg  # no version stamp: stable outputs
    assert bundle_of(w)["image/svg+xml"] is svg  # cached until the view changes
    w.depth = 0
    assert bundle_of(w)["image/svg+xml"].count('class="node') == units(w) == 4
    # A Graph displays as the widget, picture included.
    assert "image/svg+xml" in bundle_of(gw.capture(model(x).sum()))
    # Off by keyword, by the module switch, when excluded, when too big, without dot.
    assert "image/svg+xml" not in bundle_of(
        gw.GradWidget(model, example_input=x, static_fallback=False)
    )
    assert "image/svg+xml" not in w._repr_mimebundle_(exclude=["image/svg+xml"])[0]
    monkeypatch.setattr(_widget, "STATIC_FALLBACK", False)
    assert "image/svg+xml" not in bundle_of(gw.GradWidget(model, example_input=x))
    monkeypatch.setattr(_widget, "STATIC_FALLBACK", True)
    monkeypatch.setattr(_view, "STATIC_FALLBACK_MAX_UNITS", 3)
    assert "image/svg+xml" not in bundle_of(gw.GradWidget(model, example_input=x))
    monkeypatch.setattr(_view.shutil, "which", lambda _name: None)
    monkeypatch.setattr(_view, "STATIC_FALLBACK_MAX_UNITS", 300)
    assert "image/svg+xml" not in bundle_of(gw.GradWidget(model, example_input=x))


def test_static_fallback_skips_bad_dot(mlp):
    model, x = mlp
    w = gw.GradWidget(model, example_input=x)
    w.dot = "digraph { a -> }"
    assert "image/svg+xml" not in bundle_of(w)  # the widget view still shows its error
