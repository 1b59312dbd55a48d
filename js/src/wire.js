// Decoding of what gradwidget/_wire.py sends: binary arrays (float32_array) and packed JSON
// (pack_json: the node/module tables and the DOT).
import { unzlibSync } from "fflate";

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
