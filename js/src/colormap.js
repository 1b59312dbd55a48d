// Diverging colormap centred at 0: ColorBrewer RdBu (colorblind-safe), negative = blue.
// The same map as matplotlib's "RdBu_r", used by JacobianWidget.plot().

const STOPS = [
  "#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
  "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f",
].map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));

// Precomputed colors for painting many cells quickly.
const LUT_SIZE = 1024;
const LUT = new Uint8ClampedArray(LUT_SIZE * 3);
for (let i = 0; i < LUT_SIZE; i++) {
  const c = rgb((2 * i) / (LUT_SIZE - 1) - 1, 1);
  LUT.set(c, 3 * i);
}

/**
 * RGB of `value` on a symmetric scale [-vmax, vmax] (NaN: mid grey).
 * @param {number} value
 * @param {number} vmax
 * @returns {number[]} [r, g, b] in 0..255
 */
export function rgb(value, vmax) {
  if (!Number.isFinite(value)) return [128, 128, 128];
  const t = vmax > 0 ? Math.max(-1, Math.min(1, value / vmax)) : 0;
  const pos = ((t + 1) / 2) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(pos));
  const f = pos - i;
  const a = STOPS[i];
  const b = STOPS[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f));
}

/** CSS linear-gradient of the colormap, bottom (-vmax) to top (+vmax). */
export function gradientCss() {
  const stops = STOPS.map((c, i) => `rgb(${c.join(",")}) ${(i / (STOPS.length - 1)) * 100}%`);
  return `linear-gradient(to top, ${stops.join(", ")})`;
}

/**
 * Paint values row-major into a canvas whose pixels are the cells.
 * @param {HTMLCanvasElement} canvas
 * @param {Float32Array} values
 * @param {number} rows
 * @param {number} cols
 * @param {number} vmax
 */
export function paint(canvas, values, rows, cols, vmax) {
  canvas.width = Math.max(1, cols);
  canvas.height = Math.max(1, rows);
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(canvas.width, canvas.height);
  const scale = vmax > 0 ? (LUT_SIZE - 1) / (2 * vmax) : 0;
  for (let k = 0; k < rows * cols; k++) {
    const v = values[k];
    const px = 4 * k;
    if (!Number.isFinite(v)) {
      img.data.set([128, 128, 128, 255], px);
      continue;
    }
    const i = scale ? Math.max(0, Math.min(LUT_SIZE - 1, Math.round((v + vmax) * scale))) : LUT_SIZE >> 1;
    img.data[px] = LUT[3 * i];
    img.data[px + 1] = LUT[3 * i + 1];
    img.data[px + 2] = LUT[3 * i + 2];
    img.data[px + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
