"""The quickstart tutorial, run as a learner runs it, in a real JupyterLab and Notebook 7.

Its code cells are taken from notebooks/00-quickstart.ipynb itself, so the tutorial and this
test cannot drift apart. Also leaves the screenshots the README shows (test-artifacts/).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "00-quickstart.ipynb"

FILLED_JS = """
(root) => [...root.querySelectorAll('svg g.node')].filter((g) => {
  const s = g.querySelector('polygon, path, ellipse');
  return s && s.style.fill;
}).length
"""


def quickstart_cells() -> list[str]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_quickstart_runs_in_the_real_ui(nb):
    nb.open(quickstart_cells(), name=f"quickstart-{nb.app}.ipynb")
    nb.run_all(timeout=180)
    main = nb.widget(0)
    main.locator("svg g.node").first.wait_for(timeout=60_000)
    # Training colored the graph by gradient size, with no watch() call needed.
    assert main.evaluate(FILLED_JS) >= 8
    runs = nb.py("[(r['optimizer'], r['status']) for r in w.runs]")
    assert runs == [["Adam", "done"], ["Adam", "diverged"], ["SGD", "done"]]
    main.locator("canvas.gw-loss-canvas").wait_for()
    # gw.show(loss) displayed exactly one more widget (show returns None).
    assert nb.page.locator(".gradwidget").count() == 2
    # Click a parameter: it becomes `selected` and the detail panel shows its gradient.
    nb.page.set_viewport_size({"width": 1400, "height": 2000})
    main.locator("svg g.node", has_text="0.weight").first.click()
    assert nb.wait_py("w.selected", "leaf:0.weight") == "leaf:0.weight"
    main.locator("canvas.gw-hist").wait_for()
    nb.page.mouse.move(5, 5)  # no tooltip in the picture
    main.scroll_into_view_if_needed()
    shot = nb.screenshot(f"quickstart-{nb.app}")
    main.screenshot(path=str(shot.with_name(f"quickstart-widget-{nb.app}.png")))
    nb.assert_no_errors()
