// The loader widget: decompresses and compiles WASM Graphviz, and imports the graph
// front-end (widget.js + widget.css), once per page each.
// initialize() must return quickly (anywidget awaits it), so it hands back promises inside
// an object; graph widgets await `exports.viz` / `exports.frontend` via host.getWidget().

/**
 * @param {DataView} bytes gzipped text
 * @returns {Promise<string>}
 */
async function gunzipText(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).text();
}

/**
 * Import ES module source text (from a blob: URL, which Jupyter's CSP allows).
 * @param {string} code
 * @returns {Promise<any>} the module namespace
 */
async function importText(code) {
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  try {
    return await import(/* webpackIgnore: true */ url);
  } finally {
    URL.revokeObjectURL(url);
  }
}

/**
 * @param {DataView} bytes gzipped ES module text
 * @returns {Promise<any>} a @viz-js/viz instance
 */
async function compile(bytes) {
  // Counted so tests can check Graphviz is compiled once per page.
  globalThis.__gradwidget_viz_compiles = (globalThis.__gradwidget_viz_compiles || 0) + 1;
  const mod = await importText(await gunzipText(bytes));
  return mod.instance();
}

/**
 * The graph front-end module; its stylesheet is added to the page once.
 * @param {any} model the loader's model
 * @param {string} digest
 * @returns {Promise<any>} the module namespace of static/widget.js
 */
async function loadFrontend(model, digest) {
  globalThis.__gradwidget_frontend_loads = (globalThis.__gradwidget_frontend_loads || 0) + 1;
  const [code, css] = await Promise.all([
    gunzipText(model.get("frontend_gz")),
    gunzipText(model.get("css_gz")),
  ]);
  if (!document.querySelector(`style[data-gradwidget="${digest}"]`)) {
    const style = document.createElement("style");
    style.dataset.gradwidget = digest;
    style.textContent = css;
    document.head.appendChild(style);
  }
  return importText(code);
}

/**
 * A promise cached on globalThis under `key` (dropped again if it fails, so a later
 * widget can retry).
 * @param {string} key
 * @param {() => Promise<any>} make
 */
function once(key, make) {
  if (!globalThis[key]) {
    globalThis[key] = make();
    globalThis[key].catch(() => delete globalThis[key]);
  }
  return globalThis[key];
}

export default {
  initialize({ model }) {
    const digest = model.get("frontend_digest");
    return {
      viz: once(`__gradwidget_viz_${model.get("digest")}`, () => compile(model.get("viz_gz"))),
      frontend: once(`__gradwidget_frontend_${digest}`, () => loadFrontend(model, digest)),
    };
  },
};
