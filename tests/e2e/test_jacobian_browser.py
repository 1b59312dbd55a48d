"""The Jacobian explorer in a real JupyterLab / Notebook 7 page (headless Chromium)."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.browser

SMALL = [
    "import torch, gradwidget as gw\n"
    "torch.manual_seed(0)\n"
    "W = torch.randn(3, 4)\n"
    "w = gw.jacobian(lambda x: torch.tanh(W @ x), torch.randn(4))\n"
    "w",
]

LARGE = [
    "import torch, gradwidget as gw\nbig = gw.jacobian(torch.tanh, torch.randn(1500))\nbig",
]


def numbers(text: str) -> list[float]:
    inner = text.strip().strip("[]")
    return [float(s) for s in inner.split(",")] if inner else []


def assert_close(got: list[float], expected: list[float]) -> None:
    assert len(got) == len(expected), (got, expected)
    for a, b in zip(got, expected, strict=True):
        assert abs(a - b) <= 2e-3 * max(1.0, abs(b)), (got, expected)


def shown(root, key: str) -> list[float]:
    return numbers(root.locator(f".gw-jac-values-{key} .gw-jac-values-data").text_content())


def open_heatmap(nb, cells: list[str]):
    """Run ``cells`` and wait for the Jacobian widget's heatmap: (widget root, its canvas)."""
    nb.open(cells)
    nb.run_all()
    root = nb.widget(selector=".gw-jacobian")
    canvas = root.locator(".gw-jac-heat canvas")
    canvas.wait_for()
    return root, canvas


def test_heatmap_renders_and_v_slider_updates_vjp(nb):
    root, canvas = open_heatmap(nb, SMALL)
    # One canvas pixel per entry of J (3 outputs × 4 inputs), painted with the colormap.
    assert canvas.evaluate("c => [c.width, c.height]") == [4, 3]
    J = nb.py("w.J.tolist()")
    pixels = canvas.evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )
    # Sign shows as hue: positive entries are red-ish, negative blue-ish (RdBu).
    for i in range(3):
        for j in range(4):
            r, _, b = pixels[4 * (i * 4 + j) : 4 * (i * 4 + j) + 3]
            if abs(J[i][j]) > 0.05:
                assert (r > b) == (J[i][j] > 0), (i, j, J[i][j], r, b)
    assert root.locator(".gw-jac-colorbar").is_visible()
    assert "x (4,)" in root.locator(".gw-jac-groups").text_content()

    # Hover gives ∂y_i/∂x_j with its indices.
    box = canvas.bounding_box()
    nb.page.mouse.move(box["x"] + box["width"] * 2.5 / 4, box["y"] + box["height"] * 1.5 / 3)
    tip = root.locator(".gw-jac-tip")
    tip.wait_for()
    text = tip.text_content()
    assert "∂y[1] / ∂x[2] = " in text and "row i = 1, column j = 2" in text
    value = float(re.search(r"= (\S+?)row", text).group(1))
    assert value == pytest.approx(J[1][2], rel=2e-3, abs=1e-4)

    # Initial v = all ones: the two ways agree and x.grad holds vᵀJ.
    before = shown(root, "matmul")
    assert_close(before, nb.py("w.vjp().tolist()"))
    assert "agree" in root.locator(".gw-jac-agree").text_content()

    # Move a slider: the kernel's v changes and the displayed vᵀJ follows.
    root.locator(".gw-jac-slider").nth(1).fill("-1.5")
    assert nb.wait_py("w.v", [1.0, -1.5, 1.0]) == [1.0, -1.5, 1.0]
    expected = nb.py("w.vjp().tolist()")
    _wait_values(root, "matmul", expected)
    assert_close(shown(root, "matmul"), expected)
    assert_close(shown(root, "backward"), expected)
    assert_close(shown(root, "grad"), expected)
    assert "✓" in root.locator(".gw-jac-agree").text_content()
    assert root.locator(".gw-jac-num").nth(1).input_value() == "-1.5"

    # Click a heatmap row: v becomes one-hot and vᵀJ is that row of J.
    nb.page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 2.5 / 3)
    assert nb.wait_py("w.v", [0.0, 0.0, 1.0]) == [0.0, 0.0, 1.0]
    root.locator(".gw-jac-rowmark").wait_for()
    _wait_values(root, "matmul", J[2])

    # Accumulation: the toggle calls backward twice; zero_grad clears.
    root.locator(".gw-jac-accumulate").check()
    assert nb.wait_py("w.backward_calls", 3) == 3
    root.locator(".gw-jac-grad-status", has_text="3 × vᵀJ").wait_for()
    _wait_values(root, "grad", [3 * x for x in J[2]])
    root.locator(".gw-jac-zero_grad").click()
    root.locator(".gw-jac-grad-status", has_text="None").wait_for()
    assert nb.py("w.x.grad is None") is True

    # Theme: colors come from JupyterLab's CSS variables.
    light = root.evaluate("e => getComputedStyle(e).color")
    nb.set_theme("JupyterLab Dark")
    nb.page.wait_for_function(
        "([e, old]) => getComputedStyle(e).color !== old", arg=[root.element_handle(), light]
    )
    nb.assert_no_errors()


def _wait_values(root, key: str, expected: list[float], timeout: float = 15) -> None:
    """Poll the displayed row until it matches ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_close(shown(root, key), expected)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_large_jacobian_is_summarised_in_the_browser(nb):
    root, canvas = open_heatmap(nb, LARGE)
    assert canvas.evaluate("c => [c.width, c.height]") == [500, 500]
    note = root.locator(".gw-jac-note").text_content()
    assert "2,250,000 entries" in note and "block means" in note
    # Sliders are replaced by presets + text for 1,100 outputs; a one-hot preset still works.
    assert root.locator(".gw-jac-slider").count() == 0
    root.locator(".gw-jac-onehot-index").fill("5")
    root.locator(".gw-jac-preset-onehot").click()
    assert nb.wait_py("big.v.index(1.0)", 5) == 5
    root.locator(".gw-jac-strip-matmul[data-cells='500']").wait_for()
    # Hover on a summarised cell names the block it stands for.
    box = canvas.bounding_box()
    nb.page.mouse.move(box["x"] + 2, box["y"] + 2)
    assert "block mean" in root.locator(".gw-jac-tip").text_content()
    # The page stays responsive, and the heatmap crossed as one binary buffer of float32.
    assert nb.page.evaluate("() => 1 + 1") == 2
    opens = nb.comm_opens("heat")
    assert opens and opens[0].nbuffers >= 1
    assert opens[0].size < 500 * 500 * 4 + 64_000, opens[0].size
    ms = root.get_attribute("data-render-ms")
    print(f"large-J comm_open: {opens[0].size:,} B, {opens[0].nbuffers} buffers; render {ms} ms")
    nb.assert_no_errors()
