"""Per-thread routing of ``sys.stdout``/``sys.stderr`` into a widget's own output area.

A rerun happens in a worker thread. ipykernel 7 sends a thread's prints to whichever cell ran
last (or drops them), and ``with out:`` in a thread froze the UI (see DESIGN.md), so writes from
registered worker threads go to a sink and everything else to the original stream.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

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
