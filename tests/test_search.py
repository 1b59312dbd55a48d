"""Finding nodes: w.search() and the haystacks the page's search box tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwidget as gw
from gradwidget._search import haystack


@pytest.fixture(scope="module")
def encoder_widget():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    return gw.GradWidget(model, example_input=torch.randn(2, 5, 16))


def test_matches_names_ops_module_paths_classes_and_shapes(encoder_widget):
    w = encoder_widget
    g = w.graph
    attn = w.search("self_attn")
    assert attn and all(
        "self_attn" in (g[i].module or "") or "self_attn" in (g[i].name or "") for i in attn
    )
    assert [g[i].index for i in attn] == sorted(g[i].index for i in attn)  # forward order
    # Everything inside layer 1's attention, ops and parameters, and nothing else.
    inside = {n.id for n in g.nodes if (n.module or "").startswith("layers.1.self_attn")}
    assert set(w.search("layers.1.self_attn")) == inside
    assert w.search("LAYERS.1.SELF_ATTN ") == w.search("layers.1.self_attn")
    # Op names, short labels, parameter names, module classes, shapes.
    relu = w.search("ReluBackward0")
    assert len(relu) == 2 and all(g[i].op == "ReluBackward0" for i in relu)
    assert w.search("relu") == relu  # the short label, any case
    assert w.search("linear1.weight") == [
        "leaf:layers.0.linear1.weight",
        "leaf:layers.1.linear1.weight",
    ]
    norms = w.search("layernorm")
    assert {g[i].module for i in norms} >= {"layers.0.norm1", "layers.1.norm2"}
    assert "leaf:layers.0.linear1.weight" in w.search("(32, 16)")
    assert w.search("") == w.search("   ") == []
    assert w.search("no such thing") == []
    with pytest.raises(TypeError, match="needs a string"):
        w.search(3)


def test_the_page_gets_the_same_haystacks(encoder_widget):
    w = encoder_widget
    hay = w.nodes["search"]
    assert hay == [haystack(n, w.graph) for n in w.graph.nodes]
    # The page's rule (a substring of these) gives w.search()'s answer.
    for q in ("attn", "Addmm", "(2, 5, 16)", "norm2.bias"):
        rows = [i for i, h in enumerate(hay) if q.strip().lower() in h]
        assert [w.nodes["id"][i] for i in rows] == w.search(q)


def test_inputs_column_is_the_graph_edges(encoder_widget):
    w = encoder_widget
    ids = w.nodes["id"]
    edges = {(ids[src], ids[dst]) for dst, ins in enumerate(w.nodes["inputs"]) for src in ins}
    assert edges == set(w.graph.edges)
