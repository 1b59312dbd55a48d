"""DOT building: views (depth/expand/default), escaping of evil names, static export."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn as nn
from torch_reference import encoder

import gradwidget as gw
from gradwidget._dot import escape, to_dot, view_of

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot missing")

EVIL = [
    'quote"inside',
    "brace{x}y",
    "a->b",
    "line1\nline2",
    "cr\r\nlf",
    "back\\slash",
    "trailing\\",
    "\\N\\G\\l",
    "<script>alert(1)</script>",
    "<b>html</b>&amp;",
    '"]; evil [label="pwn',
    "node",
    "edge",
    "graph",
    "subgraph",
    "digraph",
    "strict",
    "}",
    "ctrl\x00\x07\x1b",
    "tab\there",
    "ünïcødé ∂",
]


def recorded(layers: int) -> gw.Graph:
    model = encoder(layers)
    with gw.record(model) as rec:
        loss = model(torch.randn(2, 4, 16)).sum()
    return rec.graph_of(loss)


def node_names(dot) -> set[str]:
    """DOT names of the node statements (n<i> nodes and m<k> module boxes)."""
    found = (re.match(r"\t*([nm]\d+) \[label=", line) for line in dot.body)
    return {m.group(1) for m in found if m}


def dot_json(source: str) -> dict:
    """Let the real ``dot`` parse the DOT (raises on a syntax error)."""
    import json

    done = subprocess.run(
        ["dot", "-Tjson0"], input=source.encode(), capture_output=True, check=True
    )
    return json.loads(done.stdout)


# ---- views ---------------------------------------------------------------------------------
def test_depth_and_expand():
    g = recorded(2)
    assert g.max_depth == 4  # layers / layers.0 / layers.0.self_attn / ....out_proj
    full = g.to_dot(depth=g.max_depth)
    assert node_names(full) == {f"n{i}" for i in range(len(g))}
    assert full.source.count("subgraph cluster_") == len(g.modules)

    top = view_of(g, depth=0)
    assert top.opened == set() and set(top.modules) == {"layers"}
    one = view_of(g, depth=1)
    assert set(one.modules) == {"layers.0", "layers.1"}
    dot1 = g.to_dot(depth=1)
    assert "subgraph cluster_" in dot1.source and 'label="layers: ModuleList"' in dot1.source
    assert 'label="layers.0 (TransformerEncoderLayer)' in dot1.source

    ex = view_of(g, depth=0, expand=["layers.0.self_attn"])
    assert {"layers", "layers.0", "layers.0.self_attn"} <= ex.opened
    assert "layers.1" in ex.modules and "layers.0.linear1" in ex.modules
    assert "layers.0.self_attn" not in ex.modules
    assert view_of(g, 0, "layers.0").opened == {"layers", "layers.0"}  # one path as a str
    assert view_of(g, 0, ["no.such.module"]).opened == set()

    # Collapsed boxes carry counts; edges between units are deduplicated.
    box = next(line for line in g.to_dot(depth=0).body if "gw-module" in line)
    assert " ops, " in box and " params" in box
    edges = [line for line in full.body if "->" in line]
    assert len(edges) == len(set(edges))


def test_precomputed_view_gives_the_same_dot():
    g = recorded(1)
    for depth, expand in ((None, ()), (0, ()), (1, ["layers.0.norm1"])):
        view = view_of(g, depth, expand)
        assert to_dot(g, view=view).source == g.to_dot(depth, expand).source


def test_default_view_of_24_layer_encoder_stays_near_150_nodes():
    g = recorded(24)
    assert len(g) > 1000
    view = view_of(g)
    assert 20 <= view.visible <= 150
    assert g.auto_depth() == 1
    assert len(node_names(g.to_dot())) == view.visible
    assert len(node_names(g.to_dot(depth=g.max_depth))) == len(g)


@needs_dot
def test_dot_of_real_graphs_parses():
    g = recorded(2)
    for kw in ({}, {"depth": 0}, {"depth": 9}, {"expand": ["layers.1.self_attn"]}):
        parsed = dot_json(g.to_dot(**kw).source)
        assert parsed["name"] == "autograd"


# ---- escaping --------------------------------------------------------------------------------
def test_escape_keeps_values_inside_one_quoted_string():
    assert escape("plain text") == "plain text"
    assert escape('a"b') == 'a\\"b'
    assert escape("trailing\\") == "trailing\\\\"
    assert escape("l1\nl2") == "l1\\nl2"
    assert escape("a\r\nb\rc") == "a\\nb\\nc"
    assert escape("x\x00\x07y\tz") == "x" + "y\tz"
    for s in EVIL:
        e = escape(s)
        # Every quote is escaped by an odd run of backslashes: the string cannot end early.
        for i, ch in enumerate(e):
            if ch == '"':
                run = len(e[:i]) - len(e[:i].rstrip("\\"))
                assert run % 2 == 1, (s, e)
        assert (len(e) - len(e.rstrip("\\"))) % 2 == 0, (s, e)


class EvilScale(nn.Module):
    """Multiplies by a parameter with an evil name."""

    def __init__(self, pname: str):
        super().__init__()
        self.pname = pname
        self.register_parameter(pname, nn.Parameter(torch.randn(2)))

    def forward(self, x):
        return x * getattr(self, self.pname)


class Evil(nn.Module):
    """Submodules and parameters named by EVIL (module names cannot contain '.')."""

    def __init__(self):
        super().__init__()
        self.names = [n for n in EVIL if "." not in n]
        for name in self.names:
            self.add_module(name, EvilScale(name))

    def forward(self, x):
        for name in self.names:
            x = self.get_submodule(name)(x)
        return x.sum()


@needs_dot
@pytest.mark.parametrize("how", ["params", "record", "record-depth0"])
def test_evil_names_parse_and_inject_nothing(how):
    if how == "params":
        tensors = {name: torch.randn(2, requires_grad=True) for name in EVIL}
        out = torch.stack(list(tensors.values())).sum()
        g = gw.capture(out, params=tensors, saved=True)
        kw = {}
    else:
        model = Evil()
        with gw.record(model) as rec:
            out = model(torch.randn(2))
        g = rec.graph_of(out)
        assert {n.module for n in g.of_kind("op")} >= set(model.names)
        kw = {"depth": 0 if how == "record-depth0" else g.max_depth}
    dot = g.to_dot(**kw)
    source = dot.source
    parsed = dot_json(source)
    objects = parsed.get("objects", [])
    drawn = {o["name"] for o in objects if "nodes" not in o and "subgraphs" not in o}
    assert drawn == node_names(dot)  # no extra node smuggled in through a name
    assert len(parsed.get("edges", [])) == source.count(" -> ")

    svg = g.to_svg(**kw)
    root = ET.fromstring(svg)  # well-formed XML
    tags = {el.tag.rsplit("}", 1)[-1] for el in root.iter()}
    assert tags <= {"svg", "g", "title", "text", "path", "polygon", "polyline", "ellipse", "a"}
    assert "<script" not in svg and "<b>" not in svg
    texts = "\n".join(el.text or "" for el in root.iter() if el.tag.endswith("text"))
    if how == "params":
        assert "<script>alert(1)</script>" in texts  # shown as text, not markup
        assert 'quote"inside' in texts and "trailing\\" in texts


# ---- static export ---------------------------------------------------------------------------
def small_graph() -> gw.Graph:
    w = torch.randn(3, requires_grad=True)
    return gw.capture((w * 2).sum())


@needs_dot
def test_to_svg_and_save(tmp_path):
    g = small_graph()
    svg = g.to_svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert g.save(tmp_path / "g.svg") == str(tmp_path / "g.svg")
    assert (tmp_path / "g.svg").read_text().count("<svg") == 1
    g.save(str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    g.save(tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == g.to_dot().source
    with pytest.raises(ValueError, match=r"\.svg"):
        g.save(tmp_path / "g.jpeg")


MISSING_DOT = """
import torch, gradwidget as gw, shutil, sys
assert shutil.which("dot") is None
w = torch.randn(3, requires_grad=True)
g = gw.capture((w * 2).sum())
g.save(sys.argv[1])  # .dot needs no Graphviz
try:
    g.to_svg()
except RuntimeError as err:
    print(err)
"""


def test_missing_dot_is_a_clear_error(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    done = subprocess.run(
        [sys.executable, "-c", MISSING_DOT, str(tmp_path / "g.dot")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Graphviz 'dot' program" in done.stdout and "apt-get install graphviz" in done.stdout
    assert (tmp_path / "g.dot").read_text().startswith("digraph autograd {")
