"""A training run's output area: per-thread routing of prints, and the buffer they fill.

A rerun happens in a worker thread. ipykernel 7 sends a thread's prints to whichever cell ran
last (or drops them), and ``with out:`` in a thread froze the slider in JupyterLab (an Output
widget swallowed the slider message's "done" signal), so writes from registered worker threads
go to a sink (:class:`OutputBuffer`) and everything else to the original stream. The buffer
holds notebook-format output entries and hands the whole list over at most every
``OUTPUT_INTERVAL`` seconds (each update resends the list).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds between output-area updates (each resends the list).
OUTPUT_INTERVAL = 0.1
#: Entries kept in the output area, and characters kept per stream entry.
MAX_OUTPUT_ENTRIES = 200
MAX_OUTPUT_CHARS = 20_000

Sink = Callable[[str, str], None]

_lock = threading.Lock()
_sinks: dict[int, Sink] = {}
_installed: dict[str, Any] = {}  # stream name -> our router while installed


class _Router:
    """Stands in for ``sys.stdout``/``sys.stderr``; delegates all but ``write`` to the original."""

    def __init__(self, name: str, original: Any):
        self._name = name
        self._original = original

    def write(self, text: str) -> int:
        sink = _sinks.get(threading.get_ident())
        if sink is None:
            return self._original.write(text)
        sink(self._name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if threading.get_ident() not in _sinks:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _install() -> None:
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if not isinstance(current, _Router):
            router = _Router(name, current)
            _installed[name] = router
            setattr(sys, name, router)


def _uninstall() -> None:
    for name, router in list(_installed.items()):
        # Only undo our own replacement: someone may have redirected the stream since.
        if getattr(sys, name) is router:
            setattr(sys, name, router._original)
        del _installed[name]


class route_thread:
    """Context manager: while active, this thread's stdout/stderr writes go to ``sink(name, text)``.

    The routers are installed while at least one thread is routed and removed afterwards.
    """

    def __init__(self, sink: Sink):
        self._sink = sink
        self._ident = 0

    def __enter__(self) -> route_thread:
        self._ident = threading.get_ident()
        with _lock:
            _sinks[self._ident] = self._sink
            _install()
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _sinks.pop(self._ident, None)
            if not _sinks:
                _uninstall()


def routed_threads() -> int:
    """How many threads are being routed right now (for leak checks in tests)."""
    return len(_sinks)


class OutputBuffer:
    """Output entries (``stream``/``error`` dicts in notebook format) of the current run.

    Parameters
    ----------
    publish : callable
        ``publish(entries)`` with a copy of the whole list, at most every ``OUTPUT_INTERVAL``
        seconds (errors at once).
    """

    def __init__(self, publish: Callable[[list[dict[str, Any]]], None]):
        self._publish = publish
        self._lock = threading.RLock()
        self._entries: list[dict[str, Any]] = []
        self._dirty = False
        self._flushed = 0.0

    def write(self, name: str, text: str) -> None:
        """A :data:`Sink`: append ``text`` to stream ``name`` (stdout/stderr)."""
        self.append({"output_type": "stream", "name": name, "text": text})

    def message(self, text: str) -> None:
        """A line of our own (a problem the user should see) on stderr."""
        self.write("stderr", text + "\n")

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            last = self._entries[-1] if self._entries else None
            if (
                last is not None
                and entry["output_type"] == "stream"
                and last["output_type"] == "stream"
                and last["name"] == entry["name"]
            ):
                last["text"] = (last["text"] + entry["text"])[-MAX_OUTPUT_CHARS:]
            else:
                self._entries.append(dict(entry))
                del self._entries[:-MAX_OUTPUT_ENTRIES]
            self._dirty = True
        self.flush(force=entry["output_type"] == "error")

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._dirty or (not force and now - self._flushed < OUTPUT_INTERVAL):
                return
            self._dirty = False
            self._flushed = now
            entries = [dict(e) for e in self._entries]
        self._publish(entries)

    def clear(self) -> None:
        with self._lock:
            self._entries = []
            self._dirty = False
        self._publish([])
