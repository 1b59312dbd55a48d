// Access to the page's single WASM Graphviz instance (see loader.js).

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
 * Lay out DOT text to an SVG element.
 * @param {any} viz
 * @param {string} dot
 * @returns {SVGSVGElement}
 */
export function layout(viz, dot) {
  return viz.renderSVGElement(dot);
}
