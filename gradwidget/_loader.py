"""The Graphviz loader: ships the WASM Graphviz module once per page.

Inlining Graphviz in every widget's ``_esm`` costs ~3 MB per instance and a compile per
instance (each ``_esm`` is imported from a fresh blob: URL, so module caches do not
survive). Instead one hidden loader widget per kernel carries the gzipped module as a
binary trait; graph widgets reference it and the front-end compiles it once per page,
cached on ``globalThis`` by content hash. This works while the kernel is busy, because
nothing has to be requested from the kernel.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anywidget
import traitlets

STATIC = Path(__file__).parent / "static"


class VizLoader(anywidget.AnyWidget):
    """Hidden widget holding the gzipped Graphviz ES module (one per kernel)."""

    _esm = STATIC / "loader.js"
    viz_gz = traitlets.Bytes().tag(sync=True)
    digest = traitlets.Unicode().tag(sync=True)

    def __repr__(self) -> str:
        return f"<gradwidget.VizLoader {self.digest[:12]}>"


_loader: VizLoader | None = None


def get_loader() -> VizLoader:
    """The kernel's loader widget, created on first use."""
    global _loader
    if _loader is None or _loader.comm is None:
        data = (STATIC / "viz.mjs.gz").read_bytes()
        _loader = VizLoader(viz_gz=data, digest=hashlib.sha256(data).hexdigest())
    return _loader
