"""Static pages for the browser benchmarks: the built front-end served to headless Chromium.

Playwright answers every request to :data:`ORIGIN` itself (no HTTP server, no port): the
built bundle under ``/static/`` (``gradwidget/static``; ``viz.mjs`` is ``viz.mjs.gz``
unpacked, for a plain ``import``) and the page's own files given to :func:`route_static`.
Chromium is launched with the e2e harness's settings (``tests/e2e/chromium.py``).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "gradwidget" / "static"
ORIGIN = "http://gradwidget.bench"

sys.path.insert(0, str(ROOT))
from tests.e2e.chromium import launch_options  # noqa: E402  (needs ROOT on sys.path)

__all__ = ["ORIGIN", "STATIC", "launch_options", "route_static"]

_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
}


def route_static(page, files: dict[str, str | bytes]) -> None:
    """Serve ``files`` (path below :data:`ORIGIN` -> body) and the built bundle to ``page``."""

    def serve(route) -> None:
        name = route.request.url.removeprefix(ORIGIN + "/")
        if name in files:
            body = files[name]
        elif name == "static/viz.mjs":
            body = gzip.decompress((STATIC / "viz.mjs.gz").read_bytes())
        elif name.startswith("static/") and (STATIC / name.removeprefix("static/")).is_file():
            body = (STATIC / name.removeprefix("static/")).read_bytes()
        else:
            return route.fulfill(status=404, body="not found")
        ctype = _TYPES.get(Path(name).suffix, "application/octet-stream")
        return route.fulfill(body=body, content_type=ctype)

    page.route(f"{ORIGIN}/**", serve)
