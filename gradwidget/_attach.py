"""attach(): a GradWidget that follows a training job's log (written by ``publish()``).

The widget is the local one (graph, live colors, gradient flow, lints, loss curve); a
:class:`~gradwidget._tail.JobTail` thread reads the log and talks to it only through
:class:`_JobView`, the way a Trainer talks to a widget through its publisher. The header
says which job, how many ranks, and its state ("job finished", "rank 1 failed", "job
stopped writing 12 s ago"); the ``job`` trait carries the same as data.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import traitlets

from . import _logfile as lf
from ._graph import Graph
from ._run import manual_run
from ._tail import JobTail
from ._view import graph_state
from ._widget import GradWidget
from ._wire import encode_stats, run_points, run_summary


class AttachedWidget(GradWidget):
    """A :class:`~gradwidget.GradWidget` showing a job's log as it is written.

    Build it with :func:`attach`. ``stats()``, ``lints``, ``runs`` and the ``job`` trait
    read what the job published; :meth:`close` stops following it.
    """

    job = traitlets.Dict(
        help='The job followed: "job" (name), "world_size", "backend", "host", "state" '
        '("waiting", "running", "finished", "failed", "stopped"), "text" (what the header '
        'says), "failed" (ranks that failed), "steps", "samples", "ranks" (per rank: '
        '"state", "age" seconds since its heartbeat, "error").'
    ).tag(sync=True)

    def __init__(
        self,
        logdir: str | os.PathLike,
        *,
        path: Path | None = None,
        rank: int = 0,
        stale: float | None = None,
        **kw: Any,
    ):
        super().__init__(Graph([], []), auto_watch=False, **kw)
        self.schedule_preview = b""  # nothing is planned here: the job's own lr is drawn
        self._latest: dict[str, dict[str, Any]] = {}
        self._run = manual_run({"lr": None, "optimizer": "job"})
        self._run["id"] = 1
        self._metrics: dict[str, list[float]] = {}
        self.on_msg(self._on_hello)
        self._tail = JobTail(Path(logdir), _JobView(self), path=path, rank=rank, stale=stale)
        self.job = dict(self._tail.status)
        self.title = self._tail.status["text"]
        self._tail.start()

    # ---- what the user reads -------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Latest gradient statistics by node id, as the job published them (see
        :meth:`GradWidget.stats`)."""
        return {k: dict(v) for k, v in self._tail.latest.items()}

    @property
    def runs(self) -> list[dict]:
        """The job's logged values as one run (``losses``, ``metrics``, ``status``)."""
        return [self._run]

    @property
    def following(self) -> bool:
        """True while the tail thread runs (until :meth:`close`)."""
        return self._tail.running

    def refresh(self) -> None:
        """Read what the job wrote since the last poll now (the thread does it anyway)."""
        self._tail.poll(force=True)

    def close(self) -> None:
        """Stop following the job (joins the thread), then close the widget."""
        self._tail.stop()
        super().close()

    def __repr__(self) -> str:
        return f"<gradwidget.AttachedWidget: {self.job.get('text', '')}>"

    def _on_hello(self, _widget: Any, content: dict, _buffers: list) -> None:
        # A view that just rendered asks for the curve's points.
        if isinstance(content, dict) and content.get("action") == "hello":
            run = self._run
            self.send(*run_points(run["id"], 0, run["losses"], 0, run["lrs"]))


class _JobView:
    """What the tail thread sees of the widget (``_tail.JobView``): values in, traits out."""

    def __init__(self, widget: AttachedWidget):
        self._w = widget

    def show_graph(self, graph: Graph) -> None:
        w = self._w
        w.graph = graph
        with w.hold_sync():
            for name, value in graph_state(graph, w.depth, w.expanded).items():
                setattr(w, name, value)

    def show_sample(
        self, stats: dict[str, dict[str, Any]], samples: int, lints: list[dict], watch: dict
    ) -> None:
        w = self._w
        with w.hold_sync():
            w.grad_stats = encode_stats(stats, samples)
            if lints != w.grad_lint:
                w.grad_lint = lints
            w.grad_watch = {"watching": True, "samples": samples, **watch}

    def show_losses(self, start: int, rows: list[dict[str, Any]], optimizer: dict) -> None:
        w, run = self._w, self._w._run
        first, first_lr = len(run["losses"]), len(run["lrs"])
        for row in rows:
            loss = row.get("loss")
            if loss is not None:
                run["losses"].append(float(loss))
                lr = row.get("lr")
                run["lrs"].append(math.nan if lr is None else float(lr))
            for key, value in row.items():
                if key not in ("loss", "step", "lr"):
                    run["metrics"].setdefault(key, []).append(float(value))
        lr = optimizer.get("lr")
        run["lr"] = math.nan if lr is None else float(lr)
        run["optimizer"] = optimizer.get("optimizer") or "job"
        run["steps"] = len(run["losses"])
        if len(run["losses"]) > first:
            new_lrs = run["lrs"][first_lr:]
            w.send(*run_points(run["id"], first, run["losses"][first:], first_lr, new_lrs))
        w.run_info = [run_summary(run)]

    def show_status(self, status: dict[str, Any]) -> None:
        w, run = self._w, self._w._run
        state = status.get("state")
        run["status"] = {"finished": "done", "failed": "error", "stopped": "stopped"}.get(
            state, "running"
        )
        run["error"] = status.get("text") if state in ("failed", "stopped") else None
        with w.hold_sync():
            w.job = status
            w.title = status.get("text", "")
            if state in ("finished", "failed", "stopped") and w.grad_watch:
                w.grad_watch = {**w.grad_watch, "watching": False}
            if w.run_info:
                w.run_info = [run_summary(run)]


def attach(
    logdir: str | os.PathLike,
    *,
    job: str | None = None,
    rank: int = 0,
    stale: float | None = None,
) -> AttachedWidget:
    """A widget following a job that calls :func:`gradwidget.publish` (live, or replayed).

    Parameters
    ----------
    logdir : path
        The directory given to ``publish()`` (its newest job), or one job's ``.gwlog``
        file. The job may start later: the widget waits for it.
    job : str, optional
        Follow this job of ``logdir`` rather than the newest.
    rank : int
        Show this rank's own statistics (jobs published with ``local_stats=True``).
    stale : float, optional
        Seconds without a heartbeat after which a rank counts as gone (default 8
        heartbeats: 8 s).

    Returns
    -------
    AttachedWidget
        Its header says the job, its ranks and state; ``close()`` stops following.
    """
    if not isinstance(logdir, (str, os.PathLike)):
        raise TypeError(f"attach() needs the job's log directory; got {type(logdir).__name__}.")
    root = Path(logdir)
    path = None
    if root.is_file():
        if not root.name.endswith(lf.LOG_SUFFIX):
            raise ValueError(f"{root} is not a gradwidget job log (*{lf.LOG_SUFFIX}).")
        path, root = root, root.parent
    elif job is not None:
        path = lf.log_path(root, job, rank)
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be an int >= 0; got {rank!r}.")
    return AttachedWidget(root, path=path, rank=rank, stale=stale)
