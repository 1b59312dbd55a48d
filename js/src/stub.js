// The graph widget's `_esm`: a stub sent with every widget instance. The real front-end
// (widget.js + widget.css, ~50 KB) and Graphviz ship once per page inside the loader widget
// (gradwidget/_loader.py, loader.js); this reaches them through host.getWidget() and hands
// over. Where the host cannot compose widgets (no host.getWidget: an anywidget front-end
// older than 0.11; or it never answers), the widget asks the kernel for its own copy of
// those bytes and says so in the view, instead of staying blank.
/** How long host.getWidget may take before this widget loads its own copy. */
const COMPOSE_TIMEOUT_MS = 15_000;
/** How long the kernel may take to send that copy (it answers when idle). */
const BUNDLE_TIMEOUT_MS = 120_000;

/**
 * Show a plain message (the front-end's CSS may not be loaded).
 * @param {HTMLElement} el
 * @param {string} text
 */
function fail(el, text) {
  const div = document.createElement("div");
  div.style.cssText = "padding:8px;color:#b00020;font:13px sans-serif;white-space:pre-wrap";
  div.textContent = text;
  el.replaceChildren(div);
}

/**
 * @template T
 * @param {Promise<T>|T} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The loader widget's exports through the host, or throws why they cannot be had.
 * @param {any} model
 * @param {any} host
 */
async function composed(model, host) {
  const ref = model.get("loader");
  // A switch for tests (and for trying a host's fallback by hand): behave as a host
  // without widget composition.
  if (globalThis.__gradwidget_no_composition) throw new Error("widget composition switched off on this page");
  if (!host || typeof host.getWidget !== "function") {
    throw new Error("this notebook host has no host.getWidget (an anywidget front-end older than 0.11)");
  }
  if (!ref) throw new Error("no loader reference");
  const loader = await within(host.getWidget(ref), COMPOSE_TIMEOUT_MS, "host.getWidget");
  if (!loader.exports.frontend) throw new Error("the loader widget exported nothing");
  return loader.exports;
}

/**
 * Import ES module source text from a blob: URL (which Jupyter's CSP allows).
 * @param {string} code
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
 * This widget's own copy of the loader: the kernel sends the loader widget's traits and its
 * module (loader.js) on request, and the loader's own initialize() makes the exports.
 * @param {any} model
 * @returns {Promise<any>} the loader's exports, plus `note(el, why)` saying why it is heavier here
 */
function ownCopy(model) {
  const reply = new Promise((resolve, reject) => {
    const onMsg = (/** @type {any} */ msg, /** @type {any[]} */ buffers) => {
      if (!msg || msg.type !== "frontend_bundle") return;
      model.off("msg:custom", onMsg);
      const [viz_gz, frontend_gz, css_gz, esm] = buffers || [];
      const traits = { ...msg, viz_gz, frontend_gz, css_gz };
      const bytes = (buffers || []).reduce((n, b) => n + b.byteLength, 0);
      importText(new TextDecoder().decode(esm))
        .then((loader) => {
          const exports = loader.default.initialize({ model: { get: (/** @type {string} */ k) => traits[k] } });
          const note = (/** @type {HTMLElement} */ el, /** @type {string} */ why) => loader.explainOwnCopy(el, why, bytes);
          resolve(Object.assign(exports, { note }));
        })
        .catch(reject);
    };
    model.on("msg:custom", onMsg);
  });
  model.send({ type: "frontend_bundle" });
  return within(reply, BUNDLE_TIMEOUT_MS, "the kernel (asked for a copy)");
}

export default {
  async render(props) {
    const { model, el, host } = props;
    let exports;
    let why = "";
    let mod;
    try {
      try {
        exports = await composed(model, host);
      } catch (e) {
        why = String((e && e.message) || e);
        exports = await ownCopy(model);
      }
      mod = await exports.frontend;
    } catch (e) {
      const reason = why ? `${why}; then: ` : "";
      fail(el, `gradwidget could not load its front-end: ${reason}${(e && e.message) || e}`);
      return undefined;
    }
    if (!why) return mod.default.render(props);
    // The graph view asks the host for the loader's exports: hand it this copy instead.
    const ref = model.get("loader");
    const own = {
      async getWidget(/** @type {string} */ r) {
        if (r === ref || !host || typeof host.getWidget !== "function") return { exports };
        return host.getWidget(r);
      },
      getModel: (/** @type {string} */ r) => host.getModel(r),
    };
    const cleanup = await mod.default.render({ ...props, host: own });
    exports.note(el, why);
    return cleanup;
  },
};
