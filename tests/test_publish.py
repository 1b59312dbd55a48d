"""A job publishes its gradients to a log; a notebook widget attaches to it.

Real jobs: 2 gloo ranks on 127.0.0.1 (tests/_ddp.py) training a small DDP model; the notebook
side is an attached widget in this process, read through its Python-side state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from _ddp import RankError, RankTimeout, run_ranks
from torch import nn

import gradwidget as gw
from gradwidget import _logfile as lf

STEPS = 40


def _model_and_data(rank: int):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)  # the same starting weights on every rank
    model = DDP(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
    torch.manual_seed(100 + rank)  # each rank its own data: local gradients differ
    return model, torch.randn(16, 4), torch.randn(16, 1)


def _job(rank: int, world_size: int, logdir: str, kill_at: int) -> None:
    """The test job on ranks of torch.multiprocessing; rank 1 is killed at step ``kill_at``."""
    model, x, y = _model_and_data(rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gw.publish(model, logdir, every=0, job="ddp") as pub:
        for i in range(STEPS):
            if rank == 1 and i == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            pub.log(loss=loss)
            time.sleep(0.03)


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _in_thread(fn, *args, **kw) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as err:  # the test reads it
            box["error"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _check_leaf(shown: dict, grad: torch.Tensor) -> None:
    g = grad.double()
    assert shown["norm"] == pytest.approx(g.norm().item(), rel=1e-6)
    assert shown["mean"] == pytest.approx(g.mean().item(), rel=1e-6, abs=1e-12)
    std = g.std().item() if g.numel() > 1 else 0.0  # one value: 0, as documented
    assert shown["std"] == pytest.approx(std, rel=1e-5)
    assert shown["min"] == pytest.approx(g.min().item(), rel=1e-6)
    assert shown["max"] == pytest.approx(g.max().item(), rel=1e-6)
    assert shown["nonfinite"] == 0
    lo, hi = grad.min().item(), grad.max().item()
    assert shown["hist"] == torch.histc(grad, bins=32, min=lo, max=hi).tolist()


def _torchrun(logdir: Path, steps: int = STEPS) -> subprocess.Popen:
    """The README's command on the test job: ``torchrun --nproc_per_node=2 job.py``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo on the loopback device
    torchrun = Path(sys.executable).with_name("torchrun")
    script = Path(__file__).with_name("_publish_job.py")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(logdir)]
    return subprocess.Popen(
        [*cmd, str(steps)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: killed as a whole on a timeout
    )


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"torchrun did not finish in {timeout} s:\n{out.decode()}") from None
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


@pytest.mark.timeout(240)
def test_attached_widget_follows_a_torchrun_job_and_replays_it(tmp_path):
    w = gw.attach(tmp_path)  # before the job starts: it waits for one
    assert w.job["state"] == "waiting"
    proc = _torchrun(tmp_path)
    try:
        running = lambda: w.job.get("state") == "running" and w.stats()  # noqa: E731
        _wait(lambda: running() or proc.poll() is not None, 150, "a running job")
        if proc.poll() is not None:  # it ended already: a failure, or a very fast machine
            _finish(proc, 10)
            w.refresh()
        assert w.job["world_size"] == 2 and "2 ranks" in w.title
        assert len(w.graph) > 0 and w.nodes["id"] == [n.id for n in w.graph.nodes]
        _wait(lambda: w.job.get("state") != "running" or proc.poll(), 150, "the job to finish")
        _finish(proc, 60)
        _wait(lambda: w.job.get("state") == "finished", 10, "the job to be finished")
        r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
        # Collectives only on the steps whose intermediates were sampled, the same on both
        # ranks (the parameters' statistics need none).
        assert r0["steps"] == r1["steps"]
        assert all((calls > 0) == sampled for calls, sampled in r0["steps"])
        w.refresh()
        assert "job finished" in w.title
        live = w.stats()
        for name, grad in r0["grads"].items():
            grad = torch.tensor(grad)
            assert torch.equal(grad, torch.tensor(r1["grads"][name]))  # all-reduced
            _check_leaf(live[f"leaf:{name}"], grad)
        # Intermediates: every rank's gradient together (each of its own batch), reduced.
        whole = torch.cat([torch.tensor(r0["inter"]), torch.tensor(r1["inter"])])
        _check_leaf(live["module.0/AddmmBackward0#0"], whole)
        ops = [s for s in live.values() if s["kind"] == "op"]
        assert ops and all(s["local"] is False and s["ranks"] == 2 for s in ops)
        assert w.grad_watch["local_intermediates"] is False and w.grad_watch["op_samples"] > 0
        assert w.runs[0]["losses"] == pytest.approx(r0["losses"])
        assert w.run_info[0]["n_losses"] == STEPS and w.run_info[0]["status"] == "done"
        assert w.grad_stats  # the live colors' wire update
    finally:
        w.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert not w.following
    # Rank 1's own log (local_stats): its own intermediates, the same parameter gradient.
    own = gw.attach(tmp_path, rank=1)
    try:
        mine = own.stats()
        _check_leaf(mine["module.0/AddmmBackward0#0"], torch.tensor(r1["inter"]))
        assert mine["module.0/AddmmBackward0#0"]["local"] is True
        for name in r1["grads"]:
            assert mine[f"leaf:{name}"]["norm"] == pytest.approx(live[f"leaf:{name}"]["norm"])
    finally:
        own.close()
    # Attaching to the finished job replays it: the same final state.
    replay = gw.attach(tmp_path / "ddp.gwlog")
    try:
        assert replay.job["state"] == "finished"
        assert replay.stats() == live
        assert replay.runs[0]["losses"] == w.runs[0]["losses"]
    finally:
        replay.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("gradwidget-")]


@pytest.mark.timeout(240)
def test_a_killed_rank_is_reported_and_the_notebook_does_not_hang(tmp_path):
    w = gw.attach(tmp_path, stale=5.0)
    thread, box = _in_thread(run_ranks, _job, str(tmp_path), kill_at=15, world_size=2, timeout=120)
    try:
        _wait(lambda: w.job.get("state") == "failed", 150, "the failure to show")
        assert w.job["failed"] == [1], w.job
        assert "rank 1 failed" in w.title, w.title
        print(w.title)
        assert w.job["ranks"][0]["state"] in ("failed", "running")
        thread.join(150)
        assert isinstance(box.get("error"), (RankError, RankTimeout))
    finally:
        t0 = time.monotonic()
        w.close()
        assert time.monotonic() - t0 < 10
    assert not w.following


def test_log_reader_stops_before_a_partial_record_and_reads_it_once_complete(tmp_path):
    path = tmp_path / "j.gwlog"
    writer = lf.LogWriter(path)
    writer.write(lf.JOB, {"job": "j", "world_size": 1})
    stats = {"a": {"norm": 0.1, "values": [0.1, -2e-30, 3.5], "hist": [1.0] * 32, "data": None}}
    writer.write(lf.SAMPLE, {"samples": 1, "stats": stats})
    writer.close()
    whole = path.read_bytes()
    loss = {"start": 0, "n": 1, "columns": {"loss": [1.5], "step": [1]}}
    last = lf.encode(lf.LOSS, loss)
    cut = tmp_path / "cut.gwlog"
    cut.write_bytes(whole + last[:-3])  # a job killed in the middle of its last write
    reader = lf.LogReader(cut)
    records = reader.read()
    assert [k for k, _ in records] == ["job", "sample"]
    assert records[1][1]["stats"] == stats  # number lists travel as raw float64, exactly
    assert reader.pending == len(last) - 3 and reader.error is None
    assert reader.read() == []
    with open(cut, "ab") as f:  # the rest of the write lands
        f.write(last[-3:])
    assert reader.read() == [("loss", loss)]
    assert reader.pending == 0
    # A damaged checksum is not taken for data.
    bad = bytearray(whole + last)
    bad[-1] ^= 0xFF
    (tmp_path / "bad.gwlog").write_bytes(bytes(bad))
    assert [k for k, _ in lf.LogReader(tmp_path / "bad.gwlog").read()] == ["job", "sample"]
    # A widget attached to the cut log shows what it holds and says the job went quiet.
    reader.close()


def test_attach_to_a_cut_log_shows_what_it_holds(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    with gw.publish(model, tmp_path, every=0, job="solo") as pub:
        for _ in range(3):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            opt.step()
            pub.log(loss=loss)
    grad = model[0].weight.grad.clone()
    data = (tmp_path / "solo.gwlog").read_bytes()
    (tmp_path / "solo.gwlog").write_bytes(data[:-5])  # the end record cut short
    w = gw.attach(tmp_path / "solo.gwlog")
    try:
        _check_leaf(w.stats()["leaf:0.weight"], grad)
        assert len(w.runs[0]["losses"]) == 3
        assert w.job["state"] != "finished" and w.job["world_size"] == 1
    finally:
        w.close()


def test_the_jobs_lints_reach_the_attached_widget(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    with gw.publish(model, tmp_path, every=0, job="nan") as pub:
        for step in range(3):
            if step == 2:
                with torch.no_grad():
                    model[2].weight[0, 0] = float("nan")
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            opt.step()
            pub.log(loss=loss)
    w = gw.attach(tmp_path)
    try:
        assert "nonfinite" in [lint["code"] for lint in w.lints]
        assert w.grad_lint == w.lints
        assert w.stats()["leaf:2.weight"]["nonfinite"] == 4  # NaN in every weight's grad
        assert w.job["state"] == "finished"
    finally:
        w.close()


def test_a_job_that_went_quiet_says_since_when(tmp_path):
    writer = lf.LogWriter(lf.log_path(tmp_path, "old"))
    writer.write(lf.JOB, {"job": "old", "world_size": 2, "beat_every": 1.0})
    writer.close()
    for rank in range(2):  # both ranks stopped beating a minute ago (the job was killed)
        beat = {"job": "old", "rank": rank, "state": "running", "step": 7, "time": time.time() - 60}
        lf.write_beat(lf.beat_path(tmp_path, "old", rank), beat)
    w = gw.attach(tmp_path)
    try:
        assert w.job["state"] == "stopped" and w.job["steps"] == 7
        assert "job stopped writing 60 s ago" in w.title
        # A rank that ended with its own error is named.
        beat = {"job": "old", "rank": 1, "state": "failed", "step": 7, "time": time.time()}
        lf.write_beat(lf.beat_path(tmp_path, "old", 1), {**beat, "error": "ValueError: bad batch"})
        w.refresh()
        assert w.job["failed"] == [1] and "rank 1 failed: ValueError: bad batch" in w.title
    finally:
        w.close()


def test_graph_round_trips_through_the_log():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    with gw.record(model) as rec:
        out = model(torch.randn(2, 3))
    g = rec.graph_of(out, saved=True)
    back = lf.graph_from_json(lf.graph_to_json(g))
    assert back.nodes == g.nodes and back.edges == g.edges
    assert {p: m.type for p, m in back.modules.items()} == {p: m.type for p, m in g.modules.items()}


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(TypeError, match=r"nn\.Module"):
        gw.publish(torch.zeros(3), tmp_path)
    with pytest.raises(TypeError, match="directory"):
        gw.attach(3)
    with pytest.raises(ValueError, match="intermediates"):
        gw.publish(nn.Linear(2, 1), tmp_path, intermediates="all")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="gwlog"):
        gw.attach(tmp_path / "notes.txt")
