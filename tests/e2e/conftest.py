"""Real-browser harness: JupyterLab 4 / Notebook 7 servers driven by headless Chromium.

How a browser test uses it
--------------------------
::

    import pytest

    pytestmark = pytest.mark.browser

    def test_something(nb):  # runs once in JupyterLab, once in Notebook 7
        nb.open(["import gradwidget as gw, torch",
                 "w = gw.show(torch.ones(2, requires_grad=True) * 2)"])
        nb.run_all()  # real Run menu > Run All Cells; raises on a cell error
        nb.widget().locator("svg").wait_for()  # first .gradwidget on the page
        assert nb.execute("print(w.selected)") == "\\n"  # Python in the kernel, stdout back
        assert nb.py("w.selected") == ""  # ...or a JSON-able value
        nb.assert_no_errors()  # console/page errors (the one known Notebook 7 error allowed)

Fixtures
--------
``lab_server`` / ``notebook_server`` (session)
    A :class:`JupyterServer` on 127.0.0.1 with a token, isolated config/runtime/settings dirs
    in a temp dir, news and update checks off, ``window.jupyterapp`` exposed, the test venv's
    ``bin`` first on PATH (so the kernel is this venv's Python). Started on first use, shared by
    every test of the session, stopped at the end.
``browser`` (session)
    Playwright Chromium. The executable is ``$GRADWIDGET_CHROMIUM`` or ``/usr/bin/chromium``;
    set ``GRADWIDGET_CHROMIUM=bundled`` to use Playwright's own browser instead.
``app`` (session, parametrized ``lab``/``notebook``) and ``server``
    Which front-end and its server; tests that take ``nb`` run in both.
``nb`` (function)
    A :class:`NotebookPage`: fresh browser context and page, console/page errors collected,
    websocket frames recorded (for comm_open sizes), a screenshot saved to ``test-artifacts/``
    at the end of every test (``<test>-end.png``, or ``<test>-failed.png`` on failure), the
    test's kernel shut down and the theme reset afterwards.

Everything runs against the real servers and the real built widget bundle
(``cd js && npm run build`` first). Mark browser tests ``@pytest.mark.browser``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chromium import launch_options  # tests/e2e/chromium.py (on sys.path via rootdir)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
#: Each drawn node's fill in a widget root, ``|``-joined ('' where uncolored): what live
#: gradient colors change (a restyle of the laid-out SVG).
NODE_FILLS_JS = """(root) => [...root.querySelectorAll('svg g.node')].map((g) => {
  const s = g.querySelector('polygon, path, ellipse');
  return s ? s.style.fill : '';
}).join('|')"""
#: Notebook 7's shortcuts settings plugin raises this on every page load, extensions or not.
KNOWN_PAGE_ERRORS = (re.compile(r"Cannot read properties of undefined \(reading 'schema'\)"),)
DEFAULT_TIMEOUT_MS = 60_000


# ---- servers --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterServer:
    """One running ``jupyter lab`` or ``jupyter notebook`` server."""

    app: str  # "lab" or "notebook"
    port: int
    token: str
    root: Path
    proc: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET") -> Any:
        """Call the REST API; returns decoded JSON (or None for empty replies)."""
        sep = "&" if "?" in path else "?"
        req = urllib.request.Request(f"{self.base}{path}{sep}token={self.token}", method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def doc_url(self, name: str) -> str:
        """URL that opens notebook ``name`` (relative to the server root) in this front-end."""
        if self.app == "lab":
            # ?reset: start from an empty workspace, so notebooks of earlier tests do not reopen.
            return f"{self.base}/lab/tree/{name}?reset&token={self.token}"
        return f"{self.base}/notebooks/{name}?token={self.token}"

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        """Write an nbformat-4 notebook of code cells into the server root."""
        nb = {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"c{i}",
                    "metadata": {},
                    "outputs": [],
                    "source": src,
                }
                for i, src in enumerate(cells)
            ],
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        path = self.root / name
        path.write_text(json.dumps(nb, indent=1))
        return path

    def sessions_for(self, name: str) -> list[dict]:
        return [s for s in self._retry(lambda: self.api("/api/sessions")) if s["path"] == name]

    def shutdown_sessions(self, name: str) -> None:
        """Shut down the kernels of notebook ``name`` (keeps 2-core machines responsive)."""
        with contextlib.suppress(Exception):
            for s in self.sessions_for(name):
                self.api(f"/api/sessions/{s['id']}", method="DELETE")

    @staticmethod
    def _retry(fn, tries: int = 20):
        # /api/kernels and /api/sessions can answer 500 while a kernel starts.
        for i in range(tries):
            try:
                return fn()
            except (urllib.error.URLError, ConnectionError):
                if i == tries - 1:
                    raise
                time.sleep(0.25)
        return None  # pragma: no cover


def _start_server(app: str, tmp: Path) -> JupyterServer:
    root = tmp / "root"
    root.mkdir(parents=True)
    env = dict(os.environ)
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
    ):
        (tmp / sub).mkdir()
        env[var] = str(tmp / sub)
    # No news toast, no update check: they would cover the page and try the network.
    notif = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True)
    (notif / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # Render every cell, also those scrolled out of view (Lab 4 windows long notebooks), so
    # tests can find all widgets without scrolling.
    tracker = tmp / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    # The kernel spec starts a bare `python`: make it this venv's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    port, token = _free_port(), secrets.token_hex(16)
    app_cls = "LabApp" if app == "lab" else "JupyterNotebookApp"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab" if app == "lab" else "notebook",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        f"--{app_cls}.expose_app_in_browser=True",
    ]
    if app == "lab":  # Notebook 7 has no news_url trait (setting it breaks its config)
        cmd.append("--LabApp.news_url=None")
    log = tmp / "server.log"
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = JupyterServer(app, port, token, root, proc, log)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter {app} exited early:\n{log.read_text()[-3000:]}")
        try:
            server.api("/api/status")
            return server
        except (urllib.error.URLError, ConnectionError) as exc:
            if time.monotonic() > deadline:
                proc.terminate()
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"jupyter {app} did not answer:\n{tail}") from exc
            time.sleep(0.25)


def _stop_server(server: JupyterServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(5)


@contextlib.contextmanager
def _server(app: str):
    tmp = Path(tempfile.mkdtemp(prefix=f"gw-e2e-{app}-"))
    server = _start_server(app, tmp)
    try:
        yield server
    finally:
        _stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_server():
    """A JupyterLab 4 server for the whole session."""
    with _server("lab") as s:
        yield s


@pytest.fixture(scope="session")
def notebook_server():
    """A Jupyter Notebook 7 server for the whole session."""
    with _server("notebook") as s:
        yield s


@pytest.fixture(scope="session", params=["lab", "notebook"])
def app(request) -> str:
    """Front-end under test; tests using it (or ``nb``/``server``) run in both."""
    return request.param


@pytest.fixture(scope="session")
def server(app, request) -> JupyterServer:
    return request.getfixturevalue(f"{app}_server")


# ---- browser --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser():
    """Headless Chromium via Playwright (Debian's, unless GRADWIDGET_CHROMIUM says otherwise)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    try:
        kw = launch_options()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(**kw)
        try:
            yield b
        finally:
            b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the item so fixtures know whether the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# ---- websocket messages ---------------------------------------------------------------------
@dataclass
class WsMessage:
    """One Jupyter message seen on a kernel websocket (either direction)."""

    direction: str  # "recv" (kernel -> browser) or "sent"
    size: int  # bytes of the websocket frame, buffers included
    msg_type: str
    content: dict
    nbuffers: int
    at: float = field(default_factory=time.monotonic)  # when the harness saw the frame


def parse_ws_frame(payload: str | bytes) -> tuple[dict, int] | None:
    """Decode a Jupyter kernel websocket frame into (message, number of binary buffers).

    Handles JSON text frames, the legacy binary framing and the
    ``v1.kernel.websocket.jupyter.org`` framing. Returns None for frames it cannot read.
    """
    if isinstance(payload, str):
        try:
            return json.loads(payload), 0
        except ValueError:
            return None
    data = bytes(payload)
    # v1: uint64 LE count n, then n uint64 LE offsets: channel, header, parent, metadata,
    # content, buffers...
    with contextlib.suppress(Exception):
        n = struct.unpack_from("<Q", data, 0)[0]
        if 2 <= n < 1000:
            offs = [struct.unpack_from("<Q", data, 8 * (i + 1))[0] for i in range(n)] + [len(data)]
            if offs[0] == 8 * (n + 1) and all(a <= b for a, b in itertools.pairwise(offs)):
                parts = [data[offs[i] : offs[i + 1]] for i in range(n)]
                header, parent = json.loads(parts[1]), json.loads(parts[2] or b"{}")
                content = json.loads(parts[4]) if len(parts) > 4 else {}
                msg = {"header": header, "parent_header": parent, "content": content}
                return msg, max(0, len(parts) - 5)
    # Legacy binary: uint32 BE count, uint32 BE offsets (JSON message first, then buffers).
    with contextlib.suppress(Exception):
        n = struct.unpack_from(">I", data, 0)[0]
        offs = [*struct.unpack_from(f">{n}I", data, 4), len(data)]
        return json.loads(data[offs[0] : offs[1]]), n - 1
    return None


# ---- the page object ------------------------------------------------------------------------
_EXECUTE_JS = """
async (code) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
    && panel.sessionContext.session.kernel;
  if (!kernel) throw new Error('no kernel for the current notebook');
  const future = kernel.requestExecute({ code, store_history: false, silent: false });
  let out = '';
  let err = null;
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === 'stream') out += msg.content.text;
    else if (t === 'error') err = msg.content.ename + ': ' + msg.content.evalue + '\\n'
      + (msg.content.traceback || []).join('\\n');
  };
  await future.done;
  return { out, err };
}
"""

_CELL_STATE_JS = """
() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter((c) => c.model.type === 'code');
  const errors = [];
  let pending = 0;
  cells.forEach((c, i) => {
    const outs = c.model.outputs.toJSON();
    for (const o of outs) {
      if (o.output_type === 'error') errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
    }
    if (c.model.executionCount === null || c.promptNode?.textContent.includes('*')) pending += 1;
  });
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return { pending, errors, status: kernel ? kernel.status : 'none' };
}
"""


class NotebookPage:
    """A browser page on one notebook of a :class:`JupyterServer` (see the module docstring)."""

    def __init__(self, server: JupyterServer, page, name: str):
        self.server = server
        self.app = server.app
        self.page = page
        self.name = name
        self.errors: list[str] = []
        self.ws: list[WsMessage] = []
        self.theme_changed = False
        page.set_default_timeout(DEFAULT_TIMEOUT_MS)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("console", self._on_console)
        page.on("websocket", self._watch_ws)

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            self.errors.append(f"console.error: {msg.text}")

    # -- websocket ---------------------------------------------------------------------------
    def _watch_ws(self, ws) -> None:
        if "/channels" not in ws.url:
            return

        def record(direction):
            def on_frame(payload):
                parsed = parse_ws_frame(payload)
                if parsed is None:
                    return
                msg, nbuf = parsed
                size = len(payload.encode() if isinstance(payload, str) else payload)
                mtype = (msg.get("header") or {}).get("msg_type", "")
                content = msg.get("content") or {}
                self.ws.append(WsMessage(direction, size, mtype, content, nbuf))

            return on_frame

        ws.on("framereceived", record("recv"))
        ws.on("framesent", record("sent"))

    def comm_opens(self, model_key: str | None = None) -> list[WsMessage]:
        """comm_open messages received, in order; ``model_key`` keeps those whose widget
        state has that key (e.g. ``"dot"`` for graph widgets, ``"viz_gz"`` for the loader)."""
        out = []
        for m in self.ws:
            if m.direction != "recv" or m.msg_type != "comm_open":
                continue
            data = m.content.get("data") or {}
            # Binary traits travel as buffers: their names are in buffer_paths, not state.
            keys = set(data.get("state") or {}) | {p[0] for p in data.get("buffer_paths") or []}
            if model_key is None or model_key in keys:
                out.append(m)
        return out

    # -- notebook lifecycle ------------------------------------------------------------------
    def open(self, cells: list[str], name: str | None = None) -> None:
        """Write a notebook of ``cells``, open it and wait for a really idle kernel."""
        name = name or self.name
        self.name = name
        self.server.write_notebook(name, cells)
        self.page.goto(self.server.doc_url(name))
        self.wait_kernel_idle()

    def wait_kernel_idle(self, timeout: float = 90) -> None:
        """Wait past the kernel-ready race: the toolbar says "idle" before a kernel exists."""
        deadline = time.monotonic() + timeout
        while True:
            ok = False
            with contextlib.suppress(Exception):
                for s in self.server.sessions_for(self.name):
                    k = self.server.api(f"/api/kernels/{s['kernel']['id']}")
                    ok = ok or (k["connections"] >= 1 and k["execution_state"] == "idle")
            if ok:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"kernel for {self.name} never became idle")
            time.sleep(0.25)
        self.page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
            timeout=int(timeout * 1000)
        )
        self.page.wait_for_function(
            "() => { const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(p && p.sessionContext && p.sessionContext.session"
            " && p.sessionContext.session.kernel"
            " && p.sessionContext.session.kernel.connectionStatus === 'connected'); }"
        )

    def start_all(self) -> None:
        """Run All Cells through the real Run menu, without waiting for them."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
        self.page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()

    def run_all(self, timeout: float = 120) -> None:
        """Run All Cells through the real Run menu, then wait until every cell has run.

        Raises AssertionError with the error text if a cell raised.
        """
        self.start_all()
        self.wait_cells_done(timeout)

    def cell_state(self) -> dict:
        """``{"pending": cells not yet run or running, "errors": [...], "status": kernel}``.

        Prefer ``pending`` over ``status``: ipykernel 7 can publish the idle of one request
        after the busy of the next, so the page may call a busy kernel idle.
        """
        return self.page.evaluate(_CELL_STATE_JS)

    def wait_cells_done(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        idle_seen = 0
        while True:
            st = self.cell_state()
            if st["errors"]:
                raise AssertionError("a notebook cell raised:\n" + "\n".join(st["errors"]))
            # Two idle polls in a row: queued cells can leave a brief idle gap between them.
            idle_seen = idle_seen + 1 if st["pending"] == 0 and st["status"] == "idle" else 0
            if idle_seen >= 2:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cells still pending after {timeout}s: {st}")
            time.sleep(0.2)

    def execute(self, code: str) -> str:
        """Run ``code`` in the notebook's kernel (no new cell) and return its stdout.

        Raises AssertionError with the traceback if it raised.
        """
        res = self.page.evaluate(_EXECUTE_JS, code)
        if res["err"]:
            raise AssertionError(f"kernel code raised:\n{res['err']}")
        return res["out"]

    def py(self, expr: str) -> Any:
        """Evaluate a Python expression in the kernel; its value must be JSON-serialisable."""
        out = self.execute(f"import json as _j; print(_j.dumps({expr}))")
        return json.loads(out.strip().splitlines()[-1])

    def wait_py(self, expr: str, expected: Any, timeout: float = 15) -> Any:
        """Poll a kernel expression until it equals ``expected``; returns the last value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.py(expr)
            if value == expected or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    # -- page helpers ------------------------------------------------------------------------
    def widget(self, index: int = 0, selector: str = ".gradwidget"):
        """Locator of the ``index``-th widget root on the page."""
        return self.page.locator(selector).nth(index)

    def fills(self, index: int = 0) -> str:
        """The ``index``-th widget's node fills, ``|``-joined ('' where uncolored)."""
        return self.widget(index).evaluate(NODE_FILLS_JS)

    def command(self, command: str, args: dict | None = None) -> Any:
        """Run a JupyterLab/Notebook command via ``window.jupyterapp.commands``."""
        return self.page.evaluate(
            "([c, a]) => window.jupyterapp.commands.execute(c, a)", [command, args or {}]
        )

    def set_theme(self, theme: str) -> None:
        """Switch theme (e.g. "JupyterLab Dark") and wait until the page shows it."""
        self.theme_changed = True
        self.command("apputils:change-theme", {"theme": theme})
        light = "false" if "Dark" in theme else "true"
        self.page.wait_for_function(
            f"() => document.body.dataset.jpThemeLight === '{light}'", timeout=20_000
        )

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in KNOWN_PAGE_ERRORS)]

    def assert_no_errors(self) -> None:
        bad = self.unexpected_errors()
        assert not bad, "browser errors:\n" + "\n".join(bad)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120]


@pytest.fixture
def nb(request, server, browser):
    """A fresh page for this test on ``server`` (both front-ends via ``app``)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    label = _slug(request.node.name)
    notebook = NotebookPage(server, page, f"{label}.ipynb")
    try:
        yield notebook
    finally:
        rep = getattr(request.node, "rep_call", None)
        failed = rep is None or rep.failed
        with contextlib.suppress(Exception):
            notebook.screenshot(f"{label}-{'failed' if failed else 'end'}")
        if failed and notebook.errors:
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / f"{label}-console.txt").write_text("\n".join(notebook.errors))
        if notebook.theme_changed:
            with contextlib.suppress(Exception):
                notebook.set_theme("JupyterLab Light")
        context.close()
        server.shutdown_sessions(notebook.name)
