"""The job log: one append-only file per job, readable while it is written.

A training job (:mod:`gradwidget._publish`) appends records; a notebook
(:mod:`gradwidget._tail`) reads them as they come. The file is::

    b"GWLOG\\x00\\x01\\n"                          8-byte header
    record*                                       each: <u32 length> <u32 crc32> <u8 kind>
                                                  then ``length`` payload bytes

little-endian, the CRC-32 over the kind byte and the payload. Each record is one ``write()``
of the whole record, so a reader meets at most one incomplete record, the last: a length
past the end of the file, or a checksum that does not match yet. :class:`LogReader` stops
before it and reads it on a later call once complete; a file cut mid-record (a job killed
while writing, a copy) reads up to the last whole record.

Payloads are JSON (NaN and infinities allowed: both sides are Python); graphs and samples are
zlib-compressed. Besides the log, each rank keeps a small heartbeat file next to it
(``<job>.rank<r>.beat``, JSON replaced atomically about once a second): which ranks are
alive, at which step, and how a rank ended.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ._graph import Graph, ModuleInfo, Node, SavedTensor

MAGIC = b"GWLOG\x00\x01\n"
#: File name suffixes: the job log, a rank's own log (``local_stats``), heartbeats.
LOG_SUFFIX = ".gwlog"
BEAT_SUFFIX = ".beat"
_HEAD = struct.Struct("<IIB")
#: Record kinds.
JOB, GRAPH, SAMPLE, LOSS, END = 1, 2, 3, 4, 5
KINDS = {JOB: "job", GRAPH: "graph", SAMPLE: "sample", LOSS: "loss", END: "end"}
_COMPRESSED = {GRAPH, SAMPLE}
#: A record longer than this is taken for garbage (a corrupt length field), not awaited.
MAX_RECORD = 1 << 30


#: Number lists of a sample's statistics that travel as raw float64 (base64) in the JSON:
#: formatting floats as text was most of a sample's encoding time (0.7 -> 0.2 ms here).
_PACKED_LISTS = ("values", "data", "hist")
_F64 = "__f64__"


def _pack_sample(value: dict[str, Any]) -> dict[str, Any]:
    stats = {}
    for nid, st in value.get("stats", {}).items():
        st = dict(st)
        for key in _PACKED_LISTS:
            v = st.get(key)
            if v:
                st[key] = {_F64: base64.b64encode(np.asarray(v, dtype="<f8").tobytes()).decode()}
        stats[nid] = st
    return {**value, "stats": stats}


def _unpack(obj: dict[str, Any]) -> Any:
    if _F64 in obj:
        return np.frombuffer(base64.b64decode(obj[_F64]), dtype="<f8").tolist()
    return obj


def encode(kind: int, value: Any) -> bytes:
    """One whole record (header and payload) of ``value``."""
    if kind == SAMPLE:
        value = _pack_sample(value)
    payload = json.dumps(value, separators=(",", ":")).encode("utf-8")
    if kind in _COMPRESSED:
        payload = zlib.compress(payload, 1)  # level 1: the job's CPU matters more than bytes
    body = bytes([kind]) + payload
    return _HEAD.pack(len(payload), zlib.crc32(body), kind) + payload


def _decode(kind: int, payload: bytes) -> Any:
    if kind in _COMPRESSED:
        payload = zlib.decompress(payload)
    return json.loads(payload.decode("utf-8"), object_hook=_unpack if kind == SAMPLE else None)


class LogWriter:
    """Appends records to a job log (one ``os.write`` per record; no buffering)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(self._fd).st_size == 0:
            os.write(self._fd, MAGIC)
        self.bytes = 0

    def write(self, kind: int, value: Any) -> None:
        data = encode(kind, value)
        os.write(self._fd, data)
        self.bytes += len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LogReader:
    """Reads a job log incrementally: each :meth:`read` returns the records completed since.

    Parameters
    ----------
    path : path-like
        The log file (it may not exist yet, or be in the middle of a write).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset = 0  # start of the first record not yet returned
        self._buf = b""
        self._file: Any = None
        #: Bytes after the last whole record (an incomplete record being written, or cut).
        self.pending = 0
        #: Why reading stopped for good (a record that can never be valid), else None.
        self.error: str | None = None

    def read(self) -> list[tuple[str, Any]]:
        """``(kind, value)`` of each record completed since the last call (may be empty)."""
        if self.error is not None:
            return []
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 - kept open while tailing
            except FileNotFoundError:
                return []
        self._buf += self._file.read()
        out: list[tuple[str, Any]] = []
        pos = 0
        buf = self._buf
        if self.offset == 0:
            if len(buf) < len(MAGIC):
                return out
            if buf[: len(MAGIC)] != MAGIC:
                self.error = f"{self.path} is not a gradwidget job log"
                return out
            pos = len(MAGIC)
        while len(buf) - pos >= _HEAD.size:
            length, crc, kind = _HEAD.unpack_from(buf, pos)
            if length > MAX_RECORD or kind not in KINDS:
                self.error = f"corrupt record at byte {self.offset + pos} of {self.path}"
                break
            end = pos + _HEAD.size + length
            if end > len(buf):
                break  # still being written (or cut off): wait for the rest
            payload = buf[pos + _HEAD.size : end]
            if zlib.crc32(bytes([kind]) + payload) != crc:
                break  # not all of it has landed yet: read it again next time
            try:
                value = _decode(kind, payload)
            except (ValueError, zlib.error) as err:
                self.error = f"unreadable record at byte {self.offset + pos}: {err}"
                break
            out.append((KINDS[kind], value))
            pos = end
        self.offset += pos
        self._buf = buf[pos:]
        self.pending = len(self._buf)
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ---- graphs ----------------------------------------------------------------------------
def graph_to_json(graph: Graph) -> dict[str, Any]:
    """A Graph as plain JSON values (inverse: :func:`graph_from_json`)."""
    return {
        "nodes": [asdict(n) for n in graph.nodes],
        "edges": [list(e) for e in graph.edges],
        "modules": {p: m.type for p, m in graph.modules.items()},
        "saved_bytes": graph.saved_bytes,
    }


def graph_from_json(value: dict[str, Any]) -> Graph:
    nodes = []
    for d in value["nodes"]:
        d = dict(d)
        d["saved"] = [
            SavedTensor(s["attr"], tuple(s["shape"]), s["dtype"], s["nbytes"]) for s in d["saved"]
        ]
        for key in ("shape", "base_shape"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        nodes.append(Node(**d))
    modules = {p: ModuleInfo(p, t) for p, t in value["modules"].items()}
    edges = [(a, b) for a, b in value["edges"]]
    return Graph(nodes, edges, modules, value.get("saved_bytes", 0))


# ---- file names and heartbeats ---------------------------------------------------------
def log_path(logdir: str | os.PathLike, job: str, rank: int | None = None) -> Path:
    """The job's log (rank None or 0), or a rank's own log of local statistics."""
    name = job if not rank else f"{job}.rank{rank}"
    return Path(logdir) / f"{name}{LOG_SUFFIX}"


def beat_path(logdir: str | os.PathLike, job: str, rank: int) -> Path:
    return Path(logdir) / f"{job}.rank{rank}{BEAT_SUFFIX}"


def write_beat(path: Path, beat: dict[str, Any]) -> None:
    """Replace a heartbeat file atomically (a reader sees the old one or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(beat), encoding="utf-8")
    os.replace(tmp, path)


def read_beat(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def find_job(logdir: str | os.PathLike, job: str | None = None) -> Path | None:
    """The log of ``job`` in ``logdir``, or of its newest job; None when there is none."""
    root = Path(logdir)
    if job is not None:
        path = log_path(root, job)
        return path if path.exists() else None
    try:
        logs = [p for p in root.glob(f"*{LOG_SUFFIX}") if ".rank" not in p.name]
    except OSError:
        return None
    if not logs:
        return None
    return max(logs, key=lambda p: (p.stat().st_mtime, p.name))
