"""Exported HTML (``jupyter nbconvert --to html``) opened in headless Chromium, offline.

A stored tutorial has no widget state, so nbconvert shows each graph's static SVG fallback
as an ``<img src="data:image/svg+xml...">``. With ``--execute`` nbconvert embeds the widget
state and shows the widget view instead, which renders only where the page can load the
widget manager and anywidget from a CDN (not here); offline the page must then still show
no error in place of a widget. With ``store_widget_state=False`` an executed export shows
the pictures again.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BROKEN = re.compile(r"Error displaying widget|gradwidget could not load", re.I)

SMALL = [
    "import torch, gradwidget as gw\n"
    "x = torch.randn(3, requires_grad=True)\n"
    "w = gw.GradWidget((x.tanh() * 2).sum())\n"
    "w",
    "model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))\n"
    "gw.GradWidget(model, example_input=torch.randn(8, 2))",
]


def nbconvert(path: Path, out: Path, *extra: str) -> Path:
    env = dict(os.environ)
    # The kernel nbconvert starts is a bare `python`: this venv's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "nbconvert", "--to", "html", str(path), "--output-dir", str(out)]
    subprocess.run([*cmd, *extra], check=True, env=env, capture_output=True, timeout=300)
    return out / f"{path.stem}.html"


def open_offline(browser, html: Path):
    """A page on ``html`` whose requests leave nothing but the file itself."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
    page.goto(html.as_uri(), wait_until="load")
    return context, page, errors


PICTURES_JS = """() => [...document.querySelectorAll('[data-mime-type="image/svg+xml"] img')]
  .map((img) => ({ src: img.getAttribute('src').slice(0, 40), w: img.naturalWidth,
                   h: img.naturalHeight, data: img.getAttribute('src') }))"""


def _svg_text(data_uri: str) -> str:
    head, _, payload = data_uri.partition(",")
    return base64.b64decode(payload).decode() if ";base64" in head else payload


def graph_outputs(path: Path) -> int:
    """Widget outputs of a stored notebook that carry the static SVG fallback."""
    nb = nbformat.read(path, 4)
    return sum(
        1
        for cell in nb.cells
        for o in cell.get("outputs", [])
        if WIDGET_VIEW in o.get("data", {}) and "image/svg+xml" in o.get("data", {})
    )


@pytest.mark.parametrize("stem", ["00-quickstart", "01-gradients"])
def test_stored_tutorial_exports_every_graph_as_a_picture(stem, browser, tmp_path):
    src = ROOT / "notebooks" / f"{stem}.ipynb"
    expected = graph_outputs(src)
    assert expected >= 1, f"{stem} stores no graph with its static picture"
    html = nbconvert(src, tmp_path)
    context, page, errors = open_offline(browser, html)
    try:
        pictures = page.evaluate(PICTURES_JS)
        assert len(pictures) >= expected, (len(pictures), expected)
        for p in pictures:
            assert p["src"].startswith("data:image/svg+xml"), p["src"]
            assert p["w"] > 50 and p["h"] > 50, p  # decoded and drawn, not a broken image
            svg = _svg_text(p["data"])
            assert "<svg" in svg and re.search(r'class="node\b', svg), svg[:200]
        assert not BROKEN.search(page.inner_text("body"))
        assert not errors, errors
    finally:
        context.close()


def test_executed_export_shows_no_broken_widget(browser, tmp_path):
    src = tmp_path / "small.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in SMALL])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, src)

    # Widget state embedded (nbconvert's default): no picture, but nothing broken either.
    html = nbconvert(src, tmp_path / "state", "--execute")
    text = html.read_text()
    state = re.search(
        r'<script type="application/vnd.jupyter.widget-state\+json">\s*(.*?)\s*</script>',
        text,
        re.S,
    )
    assert state and json.loads(state.group(1))["state"], "nbconvert embedded no widget state"
    context, page, errors = open_offline(browser, html)
    try:
        assert page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count() == 2
        assert not BROKEN.search(page.inner_text("body"))
        assert not [e for e in errors if "gradwidget" in e.lower()], errors
    finally:
        context.close()

    # Without the widget state (what the README recommends for a self-contained page):
    # every graph is a picture again.
    html = nbconvert(
        src, tmp_path / "pictures", "--execute", "--ExecutePreprocessor.store_widget_state=False"
    )
    context, page, errors = open_offline(browser, html)
    try:
        pictures = page.evaluate(PICTURES_JS)
        assert len(pictures) == 2 and all(p["w"] > 50 for p in pictures), pictures
        assert not BROKEN.search(page.inner_text("body"))
    finally:
        context.close()
