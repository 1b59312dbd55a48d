// Access to the page's single WASM Graphviz instance (see loader.js), and layout.

/** Views with more drawn units than this are refused (mirrors MAX_VISIBLE_NODES in Python). */
export const MAX_UNITS = 20000;

/**
 * Resolve the Graphviz instance held by the loader widget this model references.
 * @param {any} model anywidget model proxy
 * @param {any} host anywidget host (render's third argument)
 * @returns {Promise<any>}
 */
export async function getViz(model, host) {
  const ref = model.get("loader");
  if (!ref || !host) throw new Error("Graphviz loader missing: update anywidget to >= 0.10.");
  const loader = await host.getWidget(ref);
  return loader.exports.viz;
}

/**
 * Number of drawn units (nodes `n<i>` and collapsed modules `m<j>`) declared in DOT text,
 * counted without parsing so the guard costs ~nothing even for huge graphs.
 * @param {string} dot
 * @returns {number}
 */
export function countUnits(dot) {
  const m = dot.match(/^\s*[nm]\d+ \[/gm);
  return m ? m.length : 0;
}

/**
 * Lay out DOT text to an SVG element.
 * @param {any} viz
 * @param {string} dot
 * @returns {SVGSVGElement}
 */
export function layout(viz, dot) {
  return viz.renderSVGElement(dot);
}

/**
 * Make a Graphviz error message short and readable (first lines, no empty noise).
 * @param {unknown} err
 * @returns {string}
 */
export function describeError(err) {
  const e = /** @type {any} */ (err);
  let text = "";
  if (e && Array.isArray(e.errors) && e.errors.length) {
    text = e.errors.map((x) => x.message || String(x)).join("; ");
  } else {
    text = (e && e.message) || String(err);
  }
  return text.split("\n").filter(Boolean).slice(0, 4).join(" ");
}
