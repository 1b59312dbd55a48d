"""The live-gradient stats wire format, pinned by a fixed blob both decoders read.

``tests/data/stats.bin`` is what ``_wire.encode_stats`` makes of the inputs stored in
``tests/data/stats.json``; the same JSON holds the decoded values (float32-rounded, worked
out here without the decoder) and the layout constants the page gets from the loader.
This test checks the Python side; ``js/test/wire.test.mjs`` (``make test-js``) decodes the
same blob with the browser's ``decodeStats``. After a deliberate format change, rewrite
both files with ``python tests/test_stats_wire.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "data"
BLOB = DATA / "stats.bin"
EXPECTED = DATA / "stats.json"

STEP = 2**32 + 7  # the wire keeps the low 32 bits


def _hist(start: float) -> list[float]:
    return [float(start + k) for k in range(32)]


def _node(index: int, norm: float, *, hist: float = 0.0, **extra: Any) -> dict[str, Any]:
    stats = {
        "index": index,
        "norm": norm,
        "mean": -0.25,
        "std": 0.1,  # not a float32 value: the wire rounds it
        "min": -1.5,
        "max": 2.0,
        "absmean": 0.75,
        "nonfinite": 0.0,
        "numel": 16.0,
        "update_ratio": 1e-3,  # the measured ||dw|| / ||w|| of a parameter
        "hist": _hist(hist),
    }
    stats.update(extra)
    return stats


def inputs() -> dict[str, dict[str, Any]]:
    """What a sample of four tensors hands the encoder (JSON-ready, no inf/nan)."""
    return {
        "leaf:0.weight": _node(3, 1.5, values=[0.5, -0.125, 3.0], data=[1.0, 2.0, -4.0]),
        "op:AddmmBackward0": _node(0, 1e-7, hist=100.0, values=[0.1]),
        "op:hidden": _node(-1, 9.0),  # not drawn: not sent
        # A statistic beyond float32's range goes out as inf; NaN/Inf counted.
        "leaf:0.bias": _node(1, 1e39, hist=8.0, nonfinite=2.0, numel=4.0),
    }


def _f32(v: float) -> float | str:
    with np.errstate(over="ignore"):
        return _jsonable(float(np.float32(v)))


def expected_rows(stats: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The decoded rows, in wire order, floats as float32 gives them back ("inf" for inf)."""
    from gradwidget._constants import STAT_COLUMNS

    rows = []
    for s in stats.values():
        if s["index"] < 0:
            continue
        row: dict[str, Any] = {"row": s["index"]}
        row.update({c: _f32(s[c]) for c in STAT_COLUMNS})
        row["hist"] = [_f32(v) for v in s["hist"]]
        for key in ("values", "data"):
            row[key] = [_f32(v) for v in s[key]] if s.get(key) else None
        rows.append(row)
    return rows


def _jsonable(v: Any) -> Any:
    """Floats as the fixture spells them: inf as "inf"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else "-inf" if v < 0 else "nan"
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def test_python_decoder_reads_the_fixed_blob():
    from gradwidget._wire import decode_stats

    want = json.loads(EXPECTED.read_text())
    got = decode_stats(BLOB.read_bytes())
    assert got["step"] == want["step"] == STEP % 2**32
    rows = [{"row": r, **_jsonable(row)} for r, row in got["rows"].items()]
    assert rows == want["rows"]


def test_the_blob_is_what_the_encoder_makes():
    """Encoder and fixture agree (if not: the format changed; rewrite the fixture)."""
    from gradwidget._wire import encode_stats

    want = json.loads(EXPECTED.read_text())
    assert want["inputs"] == inputs() and want["rows"] == expected_rows(inputs())
    assert encode_stats(want["inputs"], STEP) == BLOB.read_bytes()


def test_the_fixture_has_the_layout_the_loader_sends():
    from gradwidget._constants import frontend

    want = json.loads(EXPECTED.read_text())
    shared = frontend()
    assert want["layout"] == {k: shared[k] for k in ("stat_columns", "hist_bins")}


def write() -> None:
    from gradwidget._constants import frontend
    from gradwidget._wire import encode_stats

    shared = frontend()
    DATA.mkdir(exist_ok=True)
    BLOB.write_bytes(encode_stats(inputs(), STEP))
    fixture = {
        "step": STEP % 2**32,
        "layout": {k: shared[k] for k in ("stat_columns", "hist_bins")},
        "inputs": inputs(),
        "rows": expected_rows(inputs()),
    }
    EXPECTED.write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    write()
