// Access to the page's single WASM Graphviz instance (see loader.js), and layout.

/**
 * The loader widget's exports (`viz`, `layoutInWorker`, ...).
 * @param {any} model
 * @param {any} host
 */
export async function getLoader(model, host) {
  const ref = model.get("loader");
  if (!ref || !host) throw new Error("Graphviz loader missing: update anywidget to >= 0.10.");
  return (await host.getWidget(ref)).exports;
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
 * Lay out DOT text in the loader's worker, keeping the page responsive; on the main
 * thread where no worker can run. Graphviz errors are thrown either way.
 * @param {any} loader the loader widget's exports
 * @param {any} viz the main thread's Graphviz (fallback)
 * @param {string} dot
 * @returns {Promise<SVGSVGElement>}
 */
export async function layoutOffThread(loader, viz, dot) {
  let text;
  try {
    text = await loader.layoutInWorker(dot);
  } catch (e) {
    if (/** @type {any} */ (e).errors) throw e; // Graphviz's own error: same on any thread
    return layout(viz, dot);
  }
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (root.nodeName !== "svg") throw new Error("Graphviz returned no SVG");
  return /** @type {SVGSVGElement} */ (document.importNode(root, true));
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
