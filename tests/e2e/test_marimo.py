"""gradwidget in marimo: a real ``marimo run`` server on 127.0.0.1 and headless Chromium.

marimo renders each anywidget view inside a shadow root (page styles do not reach it, and
Playwright's CSS locators may not find elements there), so the checks walk every shadow
root in ``page.evaluate``. marimo has no cell magics: the notebook trains with
``w.train(step_fn)``, and the widget's own controls rerun it.

Set ``GRADWIDGET_SCREENSHOTS=docs/img`` to (re)write the README's marimo screenshots.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ARTIFACTS, _free_port

pytest.importorskip("marimo")

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

NOTEBOOK = """
import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import time

    import torch
    import torch.nn as nn

    import gradwidget as gw

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(128, 2), torch.randn(128, 1)
    w = gw.GradWidget(model, example_input=x, lr=1e-2, optimizer="adam")
    return gw, model, nn, time, torch, w, x, y


@app.cell
def _(model, nn, time, w, x, y):
    def step_fn(opt):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        time.sleep(0.02)  # a rerun lasts ~2 s: live colors have time to arrive
        return loss

    w.train(step_fn, steps=100)
    w
    return


@app.cell
def _(gw, torch):
    gw.jacobian(lambda t: torch.tanh(t) * 2, torch.linspace(-1, 1, 5))
    return


if __name__ == "__main__":
    app.run()
"""

# Every element matching `sel` in the document and in every shadow root below it.
FIND_ALL = """
window.__gwAll = (sel) => {
  const out = [];
  const walk = (root) => {
    out.push(...root.querySelectorAll(sel));
    for (const e of root.querySelectorAll('*')) if (e.shadowRoot) walk(e.shadowRoot);
  };
  walk(document);
  return out;
};
"""

STATE_JS = r"""() => {
  const w = window.__gwAll('.gradwidget:not(.gw-jacobian)')[0];
  if (!w) return null;
  const q = (s) => w.querySelector(s);
  const css = (e, p) => (e ? getComputedStyle(e)[p] : null);
  // The weakest label-on-fill luma difference over the drawn nodes (0-255).
  const luma = (c) => { const v = (c.match(/[\d.]+/g) || [0, 0, 0]).map(Number);
    return 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2]; };
  let contrast = 255;
  for (const g of w.querySelectorAll('svg.gw-svg g.node')) {
    const shape = g.querySelector('polygon, path');
    const label = g.querySelector('text');
    if (shape && label) contrast = Math.min(contrast,
      Math.abs(luma(getComputedStyle(label).fill) - luma(getComputedStyle(shape).fill)));
  }
  const legend = q('.gw-legend');
  return {
    inShadow: w.getRootNode() instanceof ShadowRoot,
    // Copies of the widget's stylesheet adopted by its root (once per root, not per update).
    sheets: (w.getRootNode().adoptedStyleSheets || []).filter((sh) => [...sh.cssRules]
      .some((r) => r.selectorText === '.gradwidget .gw-header')).length,
    theme: w.dataset.gwTheme,
    nodes: w.querySelectorAll('svg.gw-svg g.node').length,
    header: { display: css(q('.gw-header'), 'display'), font: css(q('.gw-header'), 'fontSize') },
    row: css(q('.gw-controls-row'), 'display'),
    bg: css(w, 'backgroundColor'),
    contrast,
    nodeFg: getComputedStyle(w).getPropertyValue('--gw-node-fg').trim(),
    runs: w.querySelectorAll('.gw-runs-legend [data-run]').length,
    colored: w.querySelectorAll('svg.gw-svg g.node.gw-grad').length,
    updates: Number((legend && legend.dataset.updates) || 0),
    state: (q('.gw-train-state') || {}).textContent,
    errors: window.__gwAll('.gradwidget .gw-error')
      .filter((e) => e.offsetParent && e.textContent.trim()).map((e) => e.textContent),
  };
}"""


def _rgb(color: str) -> list[int]:
    return [int(float(v)) for v in color[color.index("(") + 1 : color.index(")")].split(",")[:3]]


@pytest.fixture(scope="module")
def marimo_url():
    """``marimo run`` of the notebook above, on 127.0.0.1, stopped after the module."""
    tmp = Path(tempfile.mkdtemp(prefix="gw-e2e-marimo-"))
    (tmp / "nb.py").write_text(NOTEBOOK)
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        (tmp / var).mkdir()
        env[var] = str(tmp / var)
    env["MARIMO_SKIP_UPDATE_CHECK"] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = _free_port()
    log = tmp / "marimo.log"
    cmd = [
        sys.executable, "-m", "marimo", "run", "nb.py", "--headless",
        "--host", "127.0.0.1", "--port", str(port), "--no-token",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"marimo exited early:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"marimo did not answer:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if os.environ.get("GRADWIDGET_KEEP_LOGS"):
            print(log.read_text()[-5000:])
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _page(browser, url: str, label: str):
    context = browser.new_context(viewport={"width": 1300, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(90_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
    page.add_init_script(FIND_ALL)
    page.goto(url)
    outcome = "failed"
    try:
        yield page, errors
        outcome = "end"
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / f"marimo-{label}-{outcome}.png"))
            if outcome == "failed" and errors:
                (ARTIFACTS / f"marimo-{label}-console.txt").write_text("\n".join(errors))
        context.close()


def _wait(page, condition: str, timeout: float = 90) -> dict:
    """Poll STATE_JS until the JS ``condition`` on it (as ``s``) holds; returns the state."""
    try:
        page.wait_for_function(
            f"() => {{ const s = ({STATE_JS})(); return !!s && ({condition}); }}",
            timeout=int(timeout * 1000),
        )
    except Exception as e:
        raise AssertionError(f"not {condition} after {timeout} s: {page.evaluate(STATE_JS)}") from e
    return page.evaluate(STATE_JS)


def _screenshot(page, name: str) -> None:
    out = os.environ.get("GRADWIDGET_SCREENSHOTS")
    if not out:
        return
    target = ROOT / out
    target.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1100, "height": 1900})  # the whole widget, unscrolled
    handle = page.evaluate_handle("() => window.__gwAll('.gradwidget:not(.gw-jacobian)')[0]")
    handle.as_element().screenshot(path=str(target / name))


def _choose(page, selector: str, value: str, event: str = "change") -> None:
    """Set a control inside the widget's shadow root the way a user's choice would."""
    page.evaluate(
        "([sel, value, event]) => { const e = window.__gwAll('.gradwidget ' + sel)[0];"
        " e.value = value; e.dispatchEvent(new Event(event, { bubbles: true })); }",
        [selector, value, event],
    )


def test_marimo_light_styles_train_and_reruns(marimo_url, browser):
    with _page(browser, f"{marimo_url}?theme=light", "light") as (page, errors):
        # w.train ran in the cell: the graph is drawn and the first run is listed.
        s = _wait(page, "s.nodes > 0 && s.runs >= 1 && s.colored > 0")
        assert s["inShadow"], "marimo renders anywidget views in a shadow root"
        # The stylesheet reached the shadow root: not the browser's block / 16 px defaults.
        assert s["header"] == {"display": "flex", "font": "12px"}, s
        assert s["row"] == "flex", s
        assert s["theme"] == "light" and sum(_rgb(s["bg"])) > 3 * 230, s
        assert s["nodeFg"] == "#1a1a1a" and s["contrast"] > 60, s  # readable labels
        # The Jacobian explorer's own stylesheet (its _css) applies there too.
        jac = page.evaluate(
            "() => { const j = window.__gwAll('.gw-jacobian')[0]; const g = j &&"
            " j.querySelector('.gw-jac-grid'); return j && { theme: j.dataset.gwTheme,"
            " grid: g && getComputedStyle(g).display }; }"
        )
        assert jac == {"theme": "light", "grid": "grid"}, jac
        _screenshot(page, "marimo-light.png")

        # The optimizer dropdown reruns from the same start: a second run, recolored live.
        before = s["updates"]
        _choose(page, "select.gw-optimizer", "SGD")
        s = _wait(page, f"s.runs >= 2 && s.updates > {before} && s.state === 'idle'")
        # The lr slider reruns again.
        before = s["updates"]
        _choose(page, "input.gw-lr-slider", "-1")
        s = _wait(page, f"s.runs >= 3 && s.updates > {before} && s.state === 'idle'")
        assert s["colored"] > 0 and not s["errors"], s
        assert s["sheets"] == 1, s
        assert not errors, errors


def test_marimo_dark_theme(marimo_url, browser):
    with _page(browser, f"{marimo_url}?theme=dark", "dark") as (page, errors):
        s = _wait(page, "s.nodes > 0 && s.runs >= 1")
        assert s["theme"] == "dark", s
        assert sum(_rgb(s["bg"])) < 3 * 80, s  # dark background without JupyterLab's vars
        # Light labels on the dark theme's fills, dark ones on light live colors.
        assert s["nodeFg"] == "#e8e8e8" and s["contrast"] > 60, s
        assert s["header"]["display"] == "flex", s
        jac = page.evaluate(
            "() => { const j = window.__gwAll('.gw-jacobian')[0];"
            " return j && [j.dataset.gwTheme, getComputedStyle(j).backgroundColor]; }"
        )
        assert jac and jac[0] == "dark" and sum(_rgb(jac[1])) < 3 * 80, jac
        _wait(page, "s.state === 'idle'")
        _screenshot(page, "marimo-dark.png")
        assert not errors, errors
