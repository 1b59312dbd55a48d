"""Which watcher hooks which module or tensor: one watcher per target, process-wide."""

from __future__ import annotations

import weakref
from typing import Any

#: id(module or leaf tensor) -> weakrefs to (it, the watcher hooked on it). A new watch of the
#: same target, e.g. a re-run cell that builds a new widget around the same model, replaces the
#: old watcher instead of stacking a second set of hooks. Keyed by id() with a weakref as a
#: guard against reuse (tensors cannot be dict keys by value: ``==`` is elementwise); weak on
#: both sides so this registry never keeps a model alive.
_ATTACHED: dict[int, tuple[weakref.ref, weakref.ref]] = {}


def claim(watcher: Any) -> None:
    """Remove whatever other watcher hooks ``watcher``'s targets, then record ``watcher``."""
    for key in watcher.targets:
        entry = _ATTACHED.get(id(key))
        if entry is not None and entry[0]() is key:
            old = entry[1]()
            if old is not None and old is not watcher:
                old.remove()
        _ATTACHED[id(key)] = (weakref.ref(key), weakref.ref(watcher))


def release(watcher: Any) -> None:
    for key in watcher.targets:
        entry = _ATTACHED.get(id(key))
        if entry is not None and entry[1]() in (watcher, None):
            del _ATTACHED[id(key)]
