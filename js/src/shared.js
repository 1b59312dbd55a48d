// Constants the kernel and the browser share, written once in Python
// (gradwidget/_constants.py frontend()). The loader widget carries them in its `constants`
// trait and hands them over (loader.js) before any graph view renders; views read them here.

/**
 * @typedef {{
 *   hist_bins: number,
 *   stat_columns: string[],
 *   max_units: number,
 *   big_view: number,
 *   schedule_labels: Record<string, string>,
 * }} Constants
 */

/** @type {Constants|null} */
let values = null;

/**
 * Take the constants the loader widget received from the kernel.
 * @param {Constants} received
 */
export function setConstants(received) {
  if (!received || !Array.isArray(received.stat_columns)) {
    throw new Error("gradwidget: the loader widget carries no shared constants (rebuild or reinstall gradwidget)");
  }
  values = Object.freeze({ ...received });
}

/**
 * The shared constants (throws before the loader handed them over).
 * @returns {Constants}
 */
export function constants() {
  if (!values) throw new Error("gradwidget: shared constants not received from the loader widget yet");
  return values;
}
