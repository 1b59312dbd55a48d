"""A widget attached to a torchrun job's log in a real JupyterLab: live colors, header, loss."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NODE_FILLS_JS

pytestmark = pytest.mark.browser

# The widget attached first (it waits for a job), then a 2-rank torchrun job of
# tests/_publish_job.py started from the kernel: the page follows it live.
JOB = Path(__file__).resolve().parent.parent / "_publish_job.py"
CELLS = [
    "import os, subprocess, sys\n"
    "from pathlib import Path\n"
    "import gradwidget as gw\n"
    "w = gw.attach('job-runs')\n"
    "w",
    "env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo'}\n"
    "torchrun = str(Path(sys.executable).with_name('torchrun'))\n"
    f"cmd = [torchrun, '--standalone', '--nproc_per_node=2', {str(JOB)!r}, 'job-runs', '60']\n"
    "job = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)",
]

#: How many of the first widget's nodes are colored.
COLORED_JS = "(root) => (" + NODE_FILLS_JS + ")(root).split('|').filter(Boolean).length"


@pytest.mark.parametrize("app", ["lab"], indirect=True)
def test_attached_widget_follows_a_torchrun_job(nb):
    nb.open(CELLS)
    nb.run_all(120)
    widget = nb.widget()
    summary = widget.locator(".gw-summary")
    assert "waiting for a job" in summary.inner_text() or "job ddp" in summary.inner_text()
    widget.locator("svg g.node").first.wait_for(timeout=120_000)  # the job's graph arrived
    nb.page.wait_for_function(
        f"(root) => ({COLORED_JS})(root) > 0", arg=widget.element_handle(), timeout=60_000
    )  # live colors
    nb.page.wait_for_function(
        "(s) => /job finished/.test(s.textContent)", arg=summary.element_handle(), timeout=120_000
    )
    assert "job ddp (2 ranks)" in summary.inner_text()
    assert nb.py("job.wait(60)") == 0
    colored = widget.evaluate(COLORED_JS)
    n_nodes = len(nb.py("w.nodes['id']"))
    assert colored >= n_nodes - 1  # every node colored (the output's gradient is a constant)
    runs = widget.locator(".gw-runs")
    runs.wait_for(state="visible", timeout=30_000)
    assert widget.locator(".gw-loss-canvas").is_visible()
    assert nb.py("w.run_info[0]['n_losses']") == 60
    assert nb.py("w.grad_watch['local_intermediates']") is False  # reduced over both ranks
    page = nb.screenshot("attached-job-page")
    nb.page.set_viewport_size({"width": 1400, "height": 1500})  # the whole widget
    nb.page.wait_for_timeout(500)
    widget.screenshot(path=str(page.parent / "attached-job.png"))
    nb.execute("w.close()")
    assert nb.py("w.following") is False
    nb.assert_no_errors()
