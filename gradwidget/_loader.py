"""The page-once loader: ships WASM Graphviz and the graph front-end once per page.

Inlining Graphviz in every widget's ``_esm`` costs ~3 MB per instance and a compile per
instance (each ``_esm`` is imported from a fresh blob: URL, so module caches do not
survive). The graph front-end itself (~40 KB of JS plus CSS) would also be resent with
every instance. Instead one hidden loader widget per kernel carries both gzipped as binary
traits; graph widgets reference it (their ``_esm`` is a stub of a few hundred bytes) and
the browser decompresses, compiles and imports each once per page, cached on
``globalThis`` by content hash. This works while the kernel is busy, because nothing has to
be requested from the kernel.

The loader also carries the constants both sides need (:func:`._constants.frontend`: stat
columns, histogram bins, layout limits, schedule labels); the front-end reads them from
there (``js/src/shared.js``) and writes none of them itself.
"""

from __future__ import annotations

import gzip
import hashlib
import json

import anywidget
import traitlets

from ._constants import STATIC, frontend


class VizLoader(anywidget.AnyWidget):
    """Hidden widget holding gzipped Graphviz and the graph front-end (one per kernel)."""

    _esm = STATIC / "loader.js"
    viz_gz = traitlets.Bytes().tag(sync=True)
    digest = traitlets.Unicode().tag(sync=True)
    # The graph widget's real front-end (static/widget.js, widget.css); js/src/stub.js
    # imports it from here.
    frontend_gz = traitlets.Bytes().tag(sync=True)
    css_gz = traitlets.Bytes().tag(sync=True)
    frontend_digest = traitlets.Unicode().tag(sync=True)
    # _constants.frontend(): handed to the front-end module when it is imported.
    constants = traitlets.Dict().tag(sync=True)

    def __repr__(self) -> str:
        return f"<gradwidget.VizLoader {self.digest[:12]}>"


_loader: VizLoader | None = None


def _gzip(data: bytes) -> bytes:
    # mtime=0: the same build gives the same bytes (and digest) in every kernel.
    return gzip.compress(data, compresslevel=9, mtime=0)


def get_loader() -> VizLoader:
    """The kernel's loader widget, created on first use."""
    global _loader
    if _loader is None or _loader.comm is None:
        viz = (STATIC / "viz.mjs.gz").read_bytes()
        js = (STATIC / "widget.js").read_bytes()
        css = (STATIC / "widget.css").read_bytes()
        constants = frontend()
        # The page keeps one front-end module per digest, configured with these constants:
        # they are part of what the digest names.
        shared = json.dumps(constants, sort_keys=True).encode()
        _loader = VizLoader(
            viz_gz=viz,
            digest=hashlib.sha256(viz).hexdigest(),
            frontend_gz=_gzip(js),
            css_gz=_gzip(css),
            frontend_digest=hashlib.sha256(js + b"\0" + css + b"\0" + shared).hexdigest(),
            constants=constants,
        )
    return _loader
