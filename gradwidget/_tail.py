"""Following a job log from the notebook: a daemon thread reads what the job appended and
shows it through a small :class:`JobView` interface, at most every ``FLUSH_INTERVAL``.

The thread never blocks on the job: it polls the log (new whole records) and the ranks'
heartbeat files, merges samples the way the local watcher does (a statistic a cheaper
sample did not compute keeps its earlier value), and works out the job's state:
"running", "finished", "failed" (a rank ended with an error, or its heartbeat stopped
while others went on) or "stopped" (no rank has written for a while). It stops on
:meth:`JobTail.stop`, which joins it within a bounded time.
"""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from . import _logfile as lf
from ._graph import Graph
from ._report import FLUSH_INTERVAL
from ._stats import COMPUTED

#: Seconds between two polls of the log and the heartbeats.
POLL = 0.1
#: Seconds between two reads of the ranks' heartbeat files.
BEAT_READS = 0.3
#: A rank whose heartbeat has not changed for this long (in heartbeat periods) is gone.
STALE_BEATS = 8
#: Errors that say a rank lost a peer: a consequence of another rank's failure.
_PEER_LOST = re.compile(
    r"peer|connection (reset|closed|refused)|broken pipe|timed? ?out|aborted|socket", re.I
)


class JobView(Protocol):
    """What the tail thread shows a job on (the attached widget implements it)."""

    def show_graph(self, graph: Graph) -> None: ...

    def show_sample(
        self, stats: dict[str, dict[str, Any]], samples: int, lints: list[dict], watch: dict
    ) -> None:
        """``stats``: each changed node's statistics as last computed (NaN: not this time)."""

    def show_losses(self, start: int, rows: list[dict[str, Any]], optimizer: dict) -> None: ...
    def show_status(self, status: dict[str, Any]) -> None: ...


def merge(latest: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> None:
    """Fold one sample into ``latest`` as the watcher's ``stats()`` does."""
    full = COMPUTED["full"]
    for nid, s in new.items():
        old = latest.get(nid)
        computed = COMPUTED.get(s.get("level", "full"), full)
        merged = s
        if old is not None and len(computed) < len(full):
            merged = dict(s)
            for key in full - computed:
                if key in old:
                    merged[key] = old[key]
            for key in ("update_ratio", "weight_norm"):
                if key in old and key not in s:
                    merged[key] = old[key]
        latest[nid] = merged


def _coalesce(into: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> None:
    """Samples waiting for the same flush: the newest values, plus what only an earlier one
    computed (what the page would have kept had it seen them one by one)."""
    for nid, s in new.items():
        old = into.get(nid)
        if old is None:
            into[nid] = s
            continue
        s = dict(s)
        for key, value in old.items():
            v = s.get(key)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                s[key] = value
        into[nid] = s


class JobTail:
    """Reads a job log (``path``, or the newest job of ``logdir``) into a :class:`JobView`.

    Parameters
    ----------
    logdir : Path
    view : JobView
    path : Path, optional
        A given log; otherwise the newest in ``logdir`` (waiting for one to appear).
    rank : int
        Read this rank's own log (``local_stats``); 0: the job's.
    stale : float, optional
        Seconds without a heartbeat after which a rank counts as gone (default
        ``STALE_BEATS`` heartbeat periods).
    """

    def __init__(
        self,
        logdir: Path,
        view: JobView,
        *,
        path: Path | None = None,
        rank: int = 0,
        stale: float | None = None,
    ):
        self.logdir = logdir
        self.view = view
        self.path = path
        self.rank = rank
        self.stale = stale
        self.reader: lf.LogReader | None = None
        self.job: dict[str, Any] | None = None
        self.end: dict[str, Any] | None = None
        self.graph: Graph | None = None
        self.latest: dict[str, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self.samples = 0
        self.lints: list[dict] = []
        self.watch: dict[str, Any] = {}
        self.optimizer: dict[str, Any] = {}
        self.status: dict[str, Any] = {"state": "waiting", "text": f"waiting for a job in {logdir}"}
        self.last_write: float | None = None  # wall time of the newest record or beat
        self._beats: dict[int, dict[str, Any]] = {}
        self._beat_seen: dict[int, tuple[Any, float, float]] = {}
        self._beats_read = -math.inf
        self._pending: dict[str, dict[str, Any]] = {}
        self._rows_sent = 0
        self._dirty = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    # ---- thread ----------------------------------------------------------------------------
    def start(self) -> None:
        self.poll()
        self._thread = threading.Thread(target=self._run, name="gradwidget-attach", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self.reader is not None:
            self.reader.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        last = 0.0
        while not self._stop.wait(POLL):
            try:
                if time.monotonic() - last >= FLUSH_INTERVAL:
                    last = time.monotonic()
                    self.poll()
            except Exception as err:  # keep following; say what went wrong once
                if len(self.errors) < 3:
                    self.errors.append(f"{type(err).__name__}: {err}")

    # ---- one poll --------------------------------------------------------------------------
    def poll(self, force: bool = False) -> None:
        """Read what is new and show it (the thread calls this; ``force``: the heartbeats
        too, however recently they were read)."""
        with self._lock:
            if self.reader is None and not self._open():
                return
            assert self.reader is not None
            for kind, value in self.reader.read():
                self._apply(kind, value)
            self._read_beats(force)
            self._show()

    def _open(self) -> bool:
        path = self.path
        if path is None:
            path = lf.find_job(self.logdir)
            if path is not None and self.rank:
                path = path.with_name(
                    path.name.replace(lf.LOG_SUFFIX, f".rank{self.rank}{lf.LOG_SUFFIX}")
                )
        if path is None or not path.exists():
            return False
        self.path = path
        self.reader = lf.LogReader(path)
        return True

    def _apply(self, kind: str, value: Any) -> None:
        if kind == "job":
            self.job = value
        elif kind == "graph":
            self.graph = lf.graph_from_json(value)
            self.view.show_graph(self.graph)
        elif kind == "sample":
            merge(self.latest, value["stats"])
            _coalesce(self._pending, value["stats"])
            self.samples = value["samples"]
            self.lints = value["lints"]
            self.watch = value["watch"]
            self.optimizer = value.get("optimizer") or {}
            self.last_write = value["time"]
            self._dirty = True
        elif kind == "loss":
            cols = value["columns"]
            self.rows.extend(
                {k: c[i] for k, c in cols.items() if c[i] is not None} for i in range(value["n"])
            )
        elif kind == "end":
            self.end = value
            self.last_write = value["time"]

    def _read_beats(self, force: bool = False) -> None:
        if self.job is None:
            return
        mono = time.monotonic()
        if not force and mono - self._beats_read < BEAT_READS:
            return  # a few times per heartbeat period is enough
        self._beats_read = mono
        job, world = self.job["job"], int(self.job.get("world_size", 1))
        for r in range(world):
            beat = lf.read_beat(lf.beat_path(self.logdir, job, r))
            if beat is None:
                continue
            self._beats[r] = beat
            key = (beat.get("time"), beat.get("state"), beat.get("step"))
            seen = self._beat_seen.get(r)
            if seen is None or seen[0] != key:
                # Age from the beat's own wall time at first sight, then on this clock.
                wall_age = max(0.0, time.time() - float(beat.get("time") or 0))
                self._beat_seen[r] = (key, mono, wall_age)

    def beat_age(self, rank: int) -> float | None:
        """Seconds since ``rank``'s heartbeat last changed (None: never seen)."""
        seen = self._beat_seen.get(rank)
        if seen is None:
            return None
        return time.monotonic() - seen[1] + seen[2]

    def _show(self) -> None:
        if self._pending and self._dirty:
            pending, self._pending = self._pending, {}
            self.view.show_sample(pending, self.samples, self.lints, self.watch)
            self._dirty = False
        if len(self.rows) > self._rows_sent:
            self.view.show_losses(self._rows_sent, self.rows[self._rows_sent :], self.optimizer)
            self._rows_sent = len(self.rows)
        status = self.job_status()
        if status != self.status:
            self.status = status
            self.view.show_status(status)

    # ---- the job's state -------------------------------------------------------------------
    def job_status(self) -> dict[str, Any]:
        """``{"state", "text", "job", "world_size", "failed", "steps", ...}`` of the job now."""
        job = self.job
        if job is None:
            return dict(self.status)
        world = int(job.get("world_size", 1))
        beat_every = float(job.get("beat_every", 1.0))
        stale = self.stale if self.stale is not None else STALE_BEATS * beat_every
        out: dict[str, Any] = {
            "job": job["job"],
            "world_size": world,
            "backend": job.get("backend"),
            "host": job.get("host"),
            "samples": self.samples,
            "steps": max((int(b.get("step", 0)) for b in self._beats.values()), default=0),
            "failed": [],
            "ranks": {},
        }
        gone, failed, lost_peer = [], [], []
        for r in range(world):
            beat = self._beats.get(r)
            if r == job.get("rank", 0) and self.end is not None:
                # The log's own end record: newer than any heartbeat of that rank.
                beat = {
                    **(beat or {}),
                    "state": self.end.get("state"),
                    "error": self.end.get("error"),
                }
            age = self.beat_age(r)
            state = beat.get("state") if beat else "unknown"
            if beat and state == "running" and age is not None and age > stale:
                state = "gone"
                gone.append(r)
            elif state == "failed":
                err = beat.get("error") or ""
                (lost_peer if _PEER_LOST.search(err) else failed).append(r)
            shown_age = None if age is None else round(age)
            out["ranks"][r] = {
                "state": state,
                "age": shown_age,
                "error": beat and beat.get("error"),
            }
        ages = [a for a in (self.beat_age(r) for r in range(world)) if a is not None]
        quiet = min(ages) if ages else None
        name = f"job {job['job']} ({world} rank{'s' if world != 1 else ''})"
        ranks = out["ranks"]
        alive = [r for r in range(world) if ranks[r]["state"] in ("running", "unknown")]
        why = ""
        # Who failed: a rank that ended with its own error; else, when ranks lost their
        # connection, the ones that said nothing (a healthy rank would have lost it too);
        # else a rank whose heartbeat stopped while others went on.
        culprits = failed
        if not culprits and lost_peer:
            culprits = gone + alive
            peers = ", ".join(str(r) for r in lost_peer)
            why = f" (rank {peers} lost the connection to it)"
        elif not culprits and gone and alive:
            culprits = gone
        if culprits:
            first = ranks[culprits[0]]
            if first["error"]:
                why = f": {first['error']}"
            elif not why:
                why = f" (no heartbeat for {first['age'] or 0:.0f} s)"
        if self.reader is not None and self.reader.error:
            out.update(state="failed", text=f"{name}: the log cannot be read: {self.reader.error}")
        elif self.end is not None and self.end.get("state") == "finished" and not culprits:
            out.update(state="finished", text=f"{name}: job finished")
        elif culprits:
            which = ", ".join(str(r) for r in culprits)
            out.update(state="failed", failed=culprits, text=f"{name}: rank {which} failed{why}")
        elif lost_peer or self.end is not None:
            err = ranks[lost_peer[0]]["error"] if lost_peer else (self.end or {}).get("error")
            out.update(state="failed", text=f"{name}: job failed" + (f": {err}" if err else ""))
        elif quiet is not None and quiet > stale:
            out.update(state="stopped", text=f"{name}: job stopped writing {quiet:.0f} s ago")
        else:
            out.update(state="running", text=f"{name}: running, step {out['steps']}")
        return out
