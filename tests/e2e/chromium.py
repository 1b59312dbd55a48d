"""How headless Chromium is launched: one source for the e2e harness and the benchmarks.

The executable is ``$GRADWIDGET_CHROMIUM`` or ``/usr/bin/chromium`` (Debian's); set
``GRADWIDGET_CHROMIUM=bundled`` to use Playwright's own browser instead. The benchmarks in
``bench/`` import this module too (they put the repository root on ``sys.path``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_options() -> dict[str, Any]:
    """Keyword arguments for Playwright's ``chromium.launch``.

    Raises
    ------
    FileNotFoundError
        When the configured executable does not exist (the message says which path).
    """
    exe = os.environ.get("GRADWIDGET_CHROMIUM", "/usr/bin/chromium")
    kw: dict[str, Any] = {"headless": True, "args": ARGS}
    if exe != "bundled":
        if not Path(exe).exists():
            raise FileNotFoundError(f"Chromium not found at {exe} (set GRADWIDGET_CHROMIUM)")
        kw["executable_path"] = exe
    return kw
