"""What can be checked here for hosts that cannot run on this machine (VS Code, Colab) and
for hosts without widget composition: the graph widget answers a request for its own copy
of the loader's bytes, and the front-end relies on nothing those hosts lack."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import gradwidget as gw
from gradwidget._constants import STATIC
from gradwidget._loader import get_loader

SRC = Path(__file__).resolve().parents[1] / "js" / "src"


def _widget_sending():
    w = gw.GradWidget(torch.ones(3, requires_grad=True).sum())
    sent = []
    # The transport (no front-end here): record what the widget would send.
    w.send = lambda content, buffers=None: sent.append((content, buffers))
    return w, sent


def test_a_graph_widget_sends_its_own_copy_on_request():
    w, sent = _widget_sending()
    try:
        w._handle_custom_msg({"type": "train", "action": "nothing"}, [])
        w._handle_custom_msg({"type": "unrelated"}, [])
        assert not any(c.get("type") == "frontend_bundle" for c, _ in sent)
        w._handle_custom_msg({"type": "frontend_bundle"}, [])
        ((content, buffers),) = [s for s in sent if s[0].get("type") == "frontend_bundle"]
        loader = get_loader()
        assert w.loader is loader
        assert content["digest"] == loader.digest
        assert content["frontend_digest"] == loader.frontend_digest
        assert content["constants"] == loader.constants
        assert buffers == [
            loader.viz_gz,
            loader.frontend_gz,
            loader.css_gz,
            (STATIC / "loader.js").read_bytes(),
        ]
    finally:
        w.close()


def _sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(SRC.glob("*.js"))}


def test_front_end_needs_nothing_output_iframes_and_webviews_lack():
    for name, text in _sources().items():
        # marimo's shadow roots, Colab's per-output iframes: styles go into the view's own
        # root (root_styles.js), never the page's head.
        assert "document.head" not in text, name
        # VS Code webviews start workers from blob: only, without imports of their own.
        assert "importScripts" not in text, name
        assert "import.meta" not in text, name
        # No state through the embedding page.
        assert not re.search(r"\b(window\.top|window\.parent|parent\.document)\b", text), name


def test_the_layout_worker_starts_from_a_blob_and_falls_back():
    bundle = _sources()["bundle.js"]
    assert "new Worker(url)" in bundle and "createObjectURL(new Blob([WORKER_SOURCE]" in bundle
    # Where no worker can start, layout runs on the page (graphviz.js layoutOffThread;
    # the no-worker browser test in tests/e2e/test_graph_widget.py drives it).
    assert "__gradwidget_worker_broken = true" in bundle
