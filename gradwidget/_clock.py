"""The sampling clock: one daemon thread that opens watchers' gates when a sample falls due."""

from __future__ import annotations

import math
import threading
import time
import weakref
from typing import Any


class Clock:
    """One daemon thread that opens watchers' gates when their next sample falls due.

    It holds the active watchers weakly and exits once none is left, so unwatching (or
    dropping the widget) leaves no thread behind. Closing a gate does not wake it (a
    wake-up costs the training thread a GIL hand-off): while some gate is open it looks
    every ``POLL`` seconds, otherwise it sleeps until the earliest next sample.

    A watcher offers ``gate_open`` (bool), ``due_at`` (``perf_counter`` time of its next
    sample) and ``open_gate()``; the clock uses nothing else of it.
    """

    POLL = 0.1

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: dict[int, weakref.ref] = {}
        self._thread: threading.Thread | None = None

    def add(self, watcher: Any) -> None:
        with self._cond:
            self._active[id(watcher)] = weakref.ref(watcher)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gradwidget-clock", daemon=True
                )
                self._thread.start()

    def discard(self, watcher: Any) -> None:
        with self._cond:
            if self._active.pop(id(watcher), None) is not None:
                self._cond.notify()  # so the thread can exit now

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.perf_counter()
                wake = self._tick(now)
                if not self._active:
                    self._thread = None
                    return
                self._cond.wait(timeout=min(max(wake - now, 0.001), 3600))

    def _tick(self, now: float) -> float:
        """Open the gates that fell due; return when to look again (no strong refs kept)."""
        wake = math.inf
        for key, ref in list(self._active.items()):
            watcher = ref()
            if watcher is None:
                del self._active[key]
                continue
            if not watcher.gate_open and watcher.due_at <= now:
                watcher.open_gate()
            # A closed gate: wake when it falls due; an open one: look again soon.
            wake = min(wake, now + self.POLL if watcher.gate_open else watcher.due_at)
        return wake


#: The one clock of this process (watchers add themselves while watching).
CLOCK = Clock()
