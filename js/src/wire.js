// Decoding of the binary arrays sent by gradwidget/_wire.py (float32_array).

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
