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
import sys
import weakref

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
# marimo's `marimo run` serves every browser tab from one process, each tab a session of its
# own: a widget's comm reaches only the session it was opened in, so each session gets its
# own loader, dropped with the session. Keyed by id(): marimo's contexts are unhashable.
_session_loaders: dict[int, tuple[weakref.ref, VizLoader]] = {}


def _gzip(data: bytes) -> bytes:
    # mtime=0: the same build gives the same bytes (and digest) in every kernel.
    return gzip.compress(data, compresslevel=9, mtime=0)


def _marimo_session() -> object | None:
    """marimo's runtime context of the running session, None outside marimo."""
    context = sys.modules.get("marimo._runtime.context")  # never import marimo ourselves
    if context is None:
        return None
    try:
        return context.safe_get_context()
    except Exception:  # another marimo layout: fall back to one loader per process
        return None


def _new_loader() -> VizLoader:
    viz = (STATIC / "viz.mjs.gz").read_bytes()
    js = (STATIC / "widget.js").read_bytes()
    css = (STATIC / "widget.css").read_bytes()
    constants = frontend()
    # The page keeps one front-end module per digest, configured with these constants:
    # they are part of what the digest names.
    shared = json.dumps(constants, sort_keys=True).encode()
    return VizLoader(
        viz_gz=viz,
        digest=hashlib.sha256(viz).hexdigest(),
        frontend_gz=_gzip(js),
        css_gz=_gzip(css),
        frontend_digest=hashlib.sha256(js + b"\0" + css + b"\0" + shared).hexdigest(),
        constants=constants,
    )


def _session_loader(session: object) -> VizLoader:
    key = id(session)
    ref, loader = _session_loaders.get(key, (None, None))
    if ref is not None and ref() is session and loader is not None and loader.comm is not None:
        return loader

    def forget(dead: weakref.ref, key: int = key) -> None:
        if _session_loaders.get(key, (None,))[0] is dead:
            del _session_loaders[key]

    loader = _new_loader()
    _session_loaders[key] = (weakref.ref(session, forget), loader)
    return loader


def get_loader() -> VizLoader:
    """The kernel's (in marimo: the session's) loader widget, created on first use."""
    global _loader
    session = _marimo_session()
    if session is not None:
        try:
            return _session_loader(session)
        except TypeError:  # a context that cannot be weakly referenced
            pass
    if _loader is None or _loader.comm is None:
        _loader = _new_loader()
    return _loader


def send_own_copy(widget: anywidget.AnyWidget, content: dict, _buffers: list) -> None:
    """Answer a graph view that cannot reach the loader widget with the loader's bytes.

    A host without widget composition (no ``host.getWidget``: an anywidget front-end older
    than 0.11, or one that never answers) asks each graph widget for its own copy of
    Graphviz and the front-end (js/src/stub.js); registered with ``widget.on_msg``.
    """
    if not isinstance(content, dict) or content.get("type") != "frontend_bundle":
        return
    loader = getattr(widget, "loader", None) or get_loader()
    traits = {
        "type": "frontend_bundle",
        "digest": loader.digest,
        "frontend_digest": loader.frontend_digest,
        "constants": loader.constants,
    }
    esm = (STATIC / "loader.js").read_bytes()  # the page builds the loader's exports itself
    widget.send(traits, buffers=[loader.viz_gz, loader.frontend_gz, loader.css_gz, esm])
