// The loader widget: decompresses and compiles WASM Graphviz once per page.
// initialize() must return quickly (anywidget awaits it), so it hands back a promise
// inside an object; graph widgets await `exports.viz` via host.getWidget().

/**
 * @param {DataView} bytes gzipped ES module text
 * @returns {Promise<any>} a @viz-js/viz instance
 */
async function compile(bytes) {
  // Counted so tests can check Graphviz is compiled once per page.
  globalThis.__gradwidget_viz_compiles = (globalThis.__gradwidget_viz_compiles || 0) + 1;
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const code = await new Response(stream).text();
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  try {
    const mod = await import(/* webpackIgnore: true */ url);
    return await mod.instance();
  } finally {
    URL.revokeObjectURL(url);
  }
}

export default {
  initialize({ model }) {
    const key = `__gradwidget_viz_${model.get("digest")}`;
    if (!globalThis[key]) {
      globalThis[key] = compile(model.get("viz_gz"));
      globalThis[key].catch(() => delete globalThis[key]);
    }
    return { viz: globalThis[key] };
  },
};
