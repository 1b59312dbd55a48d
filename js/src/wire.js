// Decoding of what gradwidget/_wire.py sends: binary arrays (float32_array), packed JSON
// (pack_json: the node/module tables and the DOT) and live-gradient stats (encode_stats).
import { unzlibSync } from "fflate";
import { constants } from "./shared.js";

/**
 * @typedef {{shape: number[], dtype: string, data: DataView|ArrayBuffer}} WireArray
 */

/**
 * A wire array as a Float32Array (copied when the buffer view is not 4-byte aligned).
 * @param {WireArray|null|undefined} arr
 * @returns {Float32Array}
 */
export function float32(arr) {
  if (!arr || !arr.data) return new Float32Array(0);
  const view = arr.data;
  const buffer = view.buffer || view;
  const offset = view.byteOffset || 0;
  const length = (view.byteLength || 0) / 4;
  if (offset % 4 === 0) return new Float32Array(buffer, offset, length);
  return new Float32Array(buffer.slice(offset, offset + length * 4));
}

// ---- packed JSON (gradwidget/_wire.py pack_json): node/module tables and DOT ----------------
/** Key of a packed value: `{zjson: <zlib-compressed UTF-8 JSON bytes>}`. */
const PACKED_KEY = "zjson";
/** @type {WeakMap<object, any>} packed wrapper -> decoded value (one decode per trait change) */
const unpacked = new WeakMap();

/**
 * Decode a value packed by `_wire.pack_json`; anything else is returned unchanged (so plain
 * JSON state, e.g. from a test page, works too). Synchronous and cached per wrapper object,
 * so readers can call it on every access.
 * @param {any} value
 * @returns {any}
 */
export function unpack(value) {
  if (!value || typeof value !== "object" || !(PACKED_KEY in value)) return value;
  let out = unpacked.get(value);
  if (out === undefined) {
    const raw = value[PACKED_KEY];
    const bytes = ArrayBuffer.isView(raw)
      ? new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)
      : new Uint8Array(raw);
    out = JSON.parse(new TextDecoder().decode(unzlibSync(bytes)));
    unpacked.set(value, out);
  }
  return out;
}

/**
 * The node column table (`{id: [...], kind: [...], module: [...], ...}`; row i is DOT node
 * `n<i>`). Use this, never `model.get("nodes")`: the trait is packed on the wire.
 * @param {any} model
 * @returns {Record<string, any[]>}
 */
export function nodeTable(model) {
  return unpack(model.get("nodes")) || {};
}

/**
 * Per module path: `{type, ops, params, saved_bytes}` (packed on the wire like the nodes).
 * @param {any} model
 * @returns {Record<string, any>}
 */
export function moduleTable(model) {
  return unpack(model.get("modules")) || {};
}

/**
 * The DOT text of the current view ("" when there is none; packed on the wire).
 * @param {any} model
 * @returns {string}
 */
export function dotText(model) {
  return unpack(model.get("dot")) || "";
}

// ---- live-gradient stats (gradwidget/_wire.py encode_stats) ---------------------------------
const STATS_MAGIC = "GWS1";

/**
 * @typedef {{row: number, norm: number, mean: number, std: number, min: number, max: number,
 *   absmean: number, nonfinite: number, numel: number, hist: Float32Array,
 *   values: Float32Array|null, data: Float32Array|null}} NodeStats
 */

/**
 * Decode one binary stats update (see `_wire.encode_stats` for the layout). The per-node
 * columns and the histogram length are the kernel's (`_constants.STAT_COLUMNS`,
 * `HIST_BINS`), sent once through the loader widget.
 * @param {DataView|ArrayBuffer} view
 * @param {{stat_columns: string[], hist_bins: number}} [layout]
 * @returns {{step: number, rows: NodeStats[]}}
 */
export function decodeStats(view, layout = constants()) {
  const { stat_columns: columns, hist_bins: bins } = layout;
  const src = view instanceof ArrayBuffer ? new Uint8Array(view) : new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  if (src.byteLength < 16) return { step: 0, rows: [] };
  const buf = src.slice().buffer; // aligned copy: typed-array views need 4-byte offsets
  const magic = String.fromCharCode(...new Uint8Array(buf, 0, 4));
  if (magic !== STATS_MAGIC) throw new Error("not a gradwidget stats update");
  const [n, step, nvals] = new Uint32Array(buf, 4, 3);
  const ncol = columns.length;
  let off = 16;
  const take = (Type, count) => {
    const arr = new Type(buf, off, count);
    off += 4 * count;
    return arr;
  };
  const idx = take(Int32Array, n);
  const scal = take(Float32Array, n * ncol);
  const hist = take(Float32Array, n * bins);
  const glen = take(Uint32Array, n);
  const dlen = take(Uint32Array, n);
  const vals = take(Float32Array, nvals);
  const rows = [];
  let pos = 0;
  for (let r = 0; r < n; r++) {
    /** @type {any} */
    const row = { row: idx[r] };
    columns.forEach((c, k) => (row[c] = scal[r * ncol + k]));
    row.hist = hist.subarray(r * bins, (r + 1) * bins);
    row.values = glen[r] ? vals.subarray(pos, pos + glen[r]) : null;
    pos += glen[r];
    row.data = dlen[r] ? vals.subarray(pos, pos + dlen[r]) : null;
    pos += dlen[r];
    rows.push(row);
  }
  return { step, rows };
}
