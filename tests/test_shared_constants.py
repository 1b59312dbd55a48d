"""The constants both sides need are written once, in ``gradwidget/_constants.py``: the
loader widget carries them to the page and the front-end keeps no copy of its own."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from gradwidget import _constants
from gradwidget._loader import get_loader

JS_SRC = Path(__file__).resolve().parent.parent / "js" / "src"


def test_the_loader_carries_the_shared_constants():
    loader = get_loader()
    assert loader.constants == _constants.frontend()
    assert json.loads(json.dumps(loader.constants)) == loader.constants  # JSON-ready
    assert "constants" in loader.get_state()


def test_the_front_end_digest_names_the_constants_too():
    """The page keeps one front-end module per digest, configured with these constants."""
    loader = get_loader()
    shared = json.dumps(loader.constants, sort_keys=True).encode()
    code = _constants.STATIC / "widget.js"
    css = _constants.STATIC / "widget.css"
    parts = [code.read_bytes(), css.read_bytes(), shared]
    assert loader.frontend_digest == hashlib.sha256(b"\0".join(parts)).hexdigest()


def test_the_front_end_repeats_none_of_them():
    js = {p.name: p.read_text(encoding="utf-8") for p in JS_SRC.glob("*.js")}
    labels = [v for k, v in _constants.SCHEDULE_LABELS.items() if v != k]
    columns = ", ".join(f'"{c}"' for c in _constants.STAT_COLUMNS[:3])
    limits = [str(_constants.MAX_VISIBLE_NODES), f"{_constants.MAX_VISIBLE_NODES:_}"]
    names = re.compile(r"\b(HIST_BINS|STAT_COLUMNS|MAX_UNITS|BIG_VIEW|SCHEDULE_LABELS)\s*=")
    for name, text in js.items():
        for needle in [*labels, columns]:
            assert needle not in text, (name, needle)
        for limit in limits:  # as a number of its own, not a part of 120_000
            assert not re.search(rf"(?<![\w.]){limit}(?![\w.])", text), (name, limit)
        assert not names.search(text), name
