// Number, byte and duration text for every view: the one place numbers become strings.

/**
 * A number as short text: `digits` significant digits, or exponent notation (with
 * `exp` decimals) at or above 1e4 and below `small` in magnitude. Zero is "0"; NaN and
 * ±Infinity are spelled out.
 * @param {number} v
 * @param {number} [digits] significant digits (default 3)
 * @param {{exp?: number, small?: number, trim?: boolean}} [opts] `trim` drops trailing
 *   zeros ("1.5", not "1.50"); default true
 * @returns {string}
 */
export function formatNumber(v, digits = 3, { exp = 2, small = 1e-3, trim = true } = {}) {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < small) return v.toExponential(exp);
  const text = v.toPrecision(digits);
  return trim ? String(Number(text)) : text;
}

/** Statistics in the live panels and legend: 3 digits kept as such ("1.00", "2.50e-5"). */
export const formatStat = (/** @type {number} */ v) => formatNumber(v, 3, { trim: false });

/** Histogram axis ends: 2 digits, exponent below 0.01 ("0.50", "-3.0e-3"). */
export const formatAxis = (/** @type {number} */ v) => formatNumber(v, 2, { exp: 1, small: 1e-2, trim: false });

/** Jacobian entries and vectors: 4 digits, trailing zeros dropped ("0.1235", "2"). */
export const formatValue = (/** @type {number} */ v) => formatNumber(v, 4);

/** Plot ticks and final losses: 3 digits, one exponent decimal ("0.05", "1.2e-5"). */
export const formatTick = (/** @type {number} */ v) => formatNumber(v, 3, { exp: 1 });

/**
 * A learning rate as short text: 0.01, 0.3, 3e-5 (a plot tick without the ".0" of "3.0e-5").
 * @param {number} v
 */
export function formatLr(v) {
  return formatTick(v).replace(".0e", "e");
}

/**
 * Bytes with a binary unit: "512 B", "1.5 KB", "2.0 MB".
 * @param {number} n
 */
export function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

/**
 * Seconds as "4.2 s", "42 s" or "3 min 5 s" ("–" when unknown).
 * @param {number|null|undefined} s
 */
export function formatDuration(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - 60 * m)} s`;
}
