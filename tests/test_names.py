"""Names of parameter leaves when capture() is given no module: the caller's models."""

from __future__ import annotations

import torch
import torch.nn as nn

import gradwidget as gw


def leaves(graph: gw.Graph) -> set[str]:
    return {n.id for n in graph.nodes if n.kind == "leaf"}


def test_one_model_holding_every_parameter_names_them_by_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    loss = model(torch.randn(8, 2)).pow(2).mean()
    g = gw.capture(loss)
    assert leaves(g) == {"leaf:0.weight", "leaf:0.bias", "leaf:2.weight", "leaf:2.bias"}
    assert g["leaf:0.weight"].module == "0"  # grouped like capture(module=model)
    assert leaves(g) == leaves(gw.capture(loss, module=model))


def test_several_models_are_prefixed_with_their_variable_and_tensors_keep_theirs():
    enc, head = nn.Linear(2, 3), nn.Linear(3, 1)
    scale = torch.ones(1, requires_grad=True)
    out = (head(enc(torch.randn(4, 2))) * scale).sum()
    assert leaves(gw.capture(out)) == {
        "leaf:enc.weight",
        "leaf:enc.bias",
        "leaf:head.weight",
        "leaf:head.bias",
        "leaf:scale",
    }


def test_the_outermost_model_names_its_submodules_parameters():
    body = nn.Linear(2, 3)
    model = nn.Sequential(body, nn.Tanh())
    aux = nn.Linear(2, 3)
    x = torch.randn(4, 2)
    out = (model(x) + aux(x)).sum()
    assert leaves(gw.capture(out)) == {
        "leaf:model.0.weight",
        "leaf:model.0.bias",
        "leaf:aux.weight",
        "leaf:aux.bias",
    }


def test_a_wrapper_holding_the_same_parameters_adds_no_prefix():
    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    net = nn.Linear(2, 1)
    wrapped = Wrapper(net)  # like DistributedDataParallel(net)
    out = wrapped.module(torch.randn(3, 2)).sum()
    assert leaves(gw.capture(out)) == {"leaf:weight", "leaf:bias"}


def test_ambiguity_falls_back_to_shapes():
    a = nn.Linear(2, 2)
    b = a  # one model under two names, next to another model: which prefix is unclear
    c = nn.Linear(2, 2)
    out = (b(torch.randn(1, 2)) + c(torch.randn(1, 2))).sum()
    names = leaves(gw.capture(out))
    assert {"leaf:c.weight", "leaf:c.bias"} <= names
    assert not any(n.startswith(("leaf:a.", "leaf:b.")) for n in names)
    assert sum(n.startswith("leaf#") for n in names) == 2


def test_models_in_a_functions_locals_are_found():
    def inside():
        net = nn.Sequential(nn.Linear(2, 2))
        other = nn.Linear(2, 2)
        x = torch.randn(1, 2)
        return leaves(gw.capture((net(x) + other(x)).sum()))

    assert inside() == {
        "leaf:net.0.weight",
        "leaf:net.0.bias",
        "leaf:other.weight",
        "leaf:other.bias",
    }
