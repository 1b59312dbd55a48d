// Pure helpers of the live-gradient views (no DOM): merging a stats update into a node's
// last statistics, and the watch-status line from the `grad_watch` trait.
//
// The watcher samples in two tiers. A statistic a sample did not compute is NaN on the wire
// (intermediates at the default level carry only `norm` and `nonfinite`; `update_ratio` is
// NaN except for parameters) and an all-NaN histogram means "not computed this sample". The
// views keep each node's last measured value of every statistic, and when it was measured.
import { formatNumber } from "./format.js";

/** Numeric fields of an update that are counts or ids, always sent: never kept from before. */
const ALWAYS_SENT = new Set(["row", "nonfinite", "numel"]);

/**
 * True when a histogram carries no counts this sample (empty, or every bin NaN).
 * @param {ArrayLike<number>|null|undefined} hist
 */
export function isUnsampledHist(hist) {
  if (!hist || !hist.length) return true;
  for (let i = 0; i < hist.length; i++) if (!Number.isNaN(hist[i])) return false;
  return true;
}

/**
 * @typedef {import("./wire.js").NodeStats & {
 *   measured: Record<string, number>,
 *   histLo: number, histHi: number,
 * }} MergedStats
 * `measured[column]` (and `measured.hist`) is the sample number that last measured that
 * value; `histLo`/`histHi` are the [min, max] the kept histogram's bins span (that sample's).
 */

/**
 * A node's statistics after an update: what the update measured, and for every statistic
 * it left NaN (not computed this sample) the last value measured before. Infinity is a
 * measured value (a statistic beyond float32's range), only NaN means "not computed".
 * The result owns its arrays (copies: it does not keep the update's buffer alive).
 * @param {MergedStats|undefined|null} prev the node's statistics so far
 * @param {import("./wire.js").NodeStats} next the decoded update row
 * @param {number} sample the update's sample number (its `step`)
 * @returns {MergedStats}
 */
export function mergeStats(prev, next, sample) {
  /** @type {any} */
  const out = { ...next };
  const measured = { ...(prev?.measured || {}) };
  // Every statistic column of the update (the kernel's STAT_COLUMNS, whatever they are).
  for (const [c, v] of Object.entries(next)) {
    if (typeof v !== "number" || ALWAYS_SENT.has(c)) continue;
    if (!Number.isNaN(v)) measured[c] = sample;
    else if (prev && typeof prev[c] === "number" && !Number.isNaN(prev[c])) out[c] = prev[c];
  }
  if (isUnsampledHist(next.hist)) {
    if (prev && prev.measured?.hist !== undefined) {
      out.hist = prev.hist;
      out.histLo = prev.histLo;
      out.histHi = prev.histHi;
    } else {
      out.hist = null;
      out.histLo = NaN;
      out.histHi = NaN;
      delete measured.hist;
    }
  } else {
    // Bins span this sample's [min, max] of the finite values.
    out.hist = Float32Array.from(next.hist, (v) => (Number.isFinite(v) ? v : 0));
    out.histLo = next.min;
    out.histHi = next.max;
    measured.hist = sample;
  }
  out.values = next.values ? next.values.slice() : null;
  out.data = next.data ? next.data.slice() : null;
  out.measured = measured;
  return out;
}

/**
 * The histogram range to draw: [lo, hi] widened by 1 on both sides when every value was
 * equal; null when it is not finite (nothing is drawn then).
 * @param {number} lo
 * @param {number} hi
 * @returns {[number, number]|null}
 */
export function histRange(lo, hi) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || hi < lo) return null;
  return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
}

/**
 * How old a kept value is, as text: "" when measured by the latest sample, "3 samples ago",
 * or null when it was never measured.
 * @param {number|undefined} at sample that measured it
 * @param {number} now the latest sample
 * @returns {string|null}
 */
export function staleness(at, now) {
  if (at === undefined) return null;
  const ago = now - at;
  if (!(ago > 0)) return "";
  return `${ago} sample${ago === 1 ? "" : "s"} ago`;
}

// ---- the watch-status line (grad_watch) ---------------------------------------------------
/**
 * A rate as short text: "5 Hz", "0.4 Hz", "12 Hz".
 * @param {number} hz
 */
export function formatHz(hz) {
  if (!Number.isFinite(hz) || hz <= 0) return "0 Hz";
  return `${hz < 0.1 ? hz.toFixed(2) : formatNumber(hz, 2)} Hz`;
}

const finite = (/** @type {any} */ v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);

/**
 * The live-status line from the `grad_watch` trait: the tiers' achieved rates
 * ("grads 5 Hz · intermediates 1 Hz"; a tier at 0 Hz that sampled nothing is left out),
 * then the notes (GradScaler's skipped steps, rank-local intermediates, the watcher's
 * notes), and a longer tooltip. null when there is nothing to show.
 * @param {Record<string, any>|null|undefined} gw
 * @returns {{rates: string, notes: {text: string, kind: string}[], title: string,
 *   watching: boolean}|null}
 */
export function watchStatus(gw) {
  if (!gw || typeof gw !== "object") return null;
  const leafHz = finite(gw.leaf_hz);
  const opHz = finite(gw.op_hz);
  const leafN = finite(gw.leaf_samples);
  const opN = finite(gw.op_samples);
  const rates = [];
  if (leafHz > 0 || leafN > 0) rates.push(`grads ${formatHz(leafHz)}`);
  if (opHz > 0 || opN > 0) rates.push(`intermediates ${formatHz(opHz)}`);
  /** @type {{text: string, kind: string}[]} */
  const notes = [];
  const skipped = finite(gw.skipped_steps);
  if (skipped > 0) {
    notes.push({ text: `${skipped} step${skipped === 1 ? "" : "s"} skipped by GradScaler`, kind: "warn" });
  }
  if (gw.local_intermediates === true) notes.push({ text: "intermediates: this rank's gradient", kind: "info" });
  for (const n of Array.isArray(gw.notes) ? gw.notes : []) {
    if (typeof n === "string" && n) notes.push({ text: n, kind: "info" });
  }
  if (!rates.length && !notes.length) return null;
  const watching = gw.watching !== false;
  const lines = [
    watching ? "Achieved sampling rates over the last 5 s" : "Sampling rates when the watch ended",
    `parameter gradients: ${leafN} sample${leafN === 1 ? "" : "s"}, ${formatHz(leafHz)}`,
    `intermediates (autograd nodes): ${opN} sample${opN === 1 ? "" : "s"}, ${formatHz(opHz)}`,
  ];
  if (finite(gw.overhead) > 0) lines.push(`sampling overhead: ${formatNumber(100 * gw.overhead, 2)} % of training CPU`);
  if (typeof gw.scale === "number" && Number.isFinite(gw.scale)) {
    lines.push(`GradScaler scale: ${formatNumber(gw.scale, 3)} (gradients shown unscaled)`);
  }
  if (gw.local_intermediates === true) {
    lines.push("Distributed: parameter gradients are the all-reduced ones; intermediates are this rank's own.");
  }
  return { rates: rates.join(" · "), notes, title: lines.join("\n"), watching };
}

// ---- update-to-weight ratio -----------------------------------------------------------------
/** The familiar healthy ‖Δw‖/‖w‖ per optimizer step (the guide line). */
export const RATIO_GUIDE = 1e-3;

/**
 * Decade range [lo, hi] (exponents) of a log axis covering the finite positive values and
 * the guide value; NaN, zero and negative values are skipped.
 * @param {ArrayLike<number>} values
 * @param {number} [guide]
 * @returns {[number, number]}
 */
export function decades(values, guide = RATIO_GUIDE) {
  let lo = Math.log10(guide);
  let hi = lo;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!(v > 0) || !Number.isFinite(v)) continue;
    const e = Math.log10(v);
    if (e < lo) lo = e;
    if (e > hi) hi = e;
  }
  lo = Math.floor(lo);
  hi = Math.ceil(hi);
  if (hi - lo < 2) {
    lo -= 1;
    hi += 1;
  }
  return [lo, hi];
}
