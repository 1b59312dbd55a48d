// What the loader widget hands graph widgets (loader.js), also built straight from the same
// bytes where a host cannot compose widgets (stub.js): WASM Graphviz decompressed and
// compiled, the graph front-end (widget.js + widget.css) imported with the kernel's shared
// constants, and a layout worker. Each is made on first use and kept once per page
// (globalThis, keyed by content digest), so creating these exports costs nothing: anywidget
// fails a loader whose initialize() takes more than a moment.

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
 * @param {Promise<string>} source the @viz-js/viz ES module text
 * @returns {Promise<any>} a @viz-js/viz instance
 */
async function compile(source) {
  // Counted so tests can check Graphviz is compiled once per page.
  globalThis.__gradwidget_viz_compiles = (globalThis.__gradwidget_viz_compiles || 0) + 1;
  const mod = await importText(await source);
  return mod.instance();
}

// A second Graphviz in a Web Worker lays out big views so the page stays responsive; it
// gets the same module text and answers {id, svg} or {id, errors}.
const WORKER_SOURCE = `
let viz = null;
onmessage = async ({ data }) => {
  if (data.code) {
    const url = URL.createObjectURL(new Blob([data.code], { type: "text/javascript" }));
    viz = import(url).then((m) => m.instance());
    return;
  }
  try {
    const r = (await viz).render(data.dot, { format: "svg" });
    if (r.status === "success") postMessage({ id: data.id, svg: r.output });
    else postMessage({ id: data.id, errors: r.errors.map((e) => e.message) });
  } catch (e) {
    postMessage({ id: data.id, errors: [String((e && e.message) || e)], broken: true });
  }
};
`;

/**
 * Start the layout worker. Resolves to `render(dot) -> Promise<svg text>`; rejects where
 * the page may not start workers (callers then lay out on the main thread).
 * @param {Promise<string>} source
 */
async function startWorker(source) {
  const code = await source;
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  let worker;
  try {
    worker = new Worker(url);
  } catch (e) {
    globalThis.__gradwidget_worker_broken = true; // no workers on this page: don't retry
    throw e;
  }
  /** @type {Map<number, {resolve: Function, reject: Function}>} */
  const pending = new Map();
  let next = 0;
  const fail = (/** @type {string} */ why) => {
    for (const p of pending.values()) p.reject(new Error(why));
    pending.clear();
  };
  worker.onerror = (e) => {
    e.preventDefault();
    globalThis.__gradwidget_worker_broken = true;
    fail(`layout worker failed: ${e.message || "could not start"}`);
  };
  worker.onmessage = ({ data }) => {
    const p = pending.get(data.id);
    pending.delete(data.id);
    if (!p) return;
    if (data.svg !== undefined) return p.resolve(data.svg);
    const err = new Error(data.errors.join("; "));
    if (data.broken) globalThis.__gradwidget_worker_broken = true;
    else Object.assign(err, { errors: data.errors.map((message) => ({ message })) });
    p.reject(err);
  };
  worker.postMessage({ code });
  return (/** @type {string} */ dot) =>
    new Promise((resolve, reject) => {
      next += 1;
      pending.set(next, { resolve, reject });
      worker.postMessage({ id: next, dot });
    });
}

/**
 * The graph front-end module, handed the kernel's shared constants (the loader's
 * `constants` trait, gradwidget/_constants.py frontend(); part of `digest`) and its
 * stylesheet, which each view puts into the root it renders in (root_styles.js).
 * @param {(name: string) => any} get the loader's traits
 * @param {string} digest
 * @returns {Promise<any>} the module namespace of static/widget.js
 */
async function loadFrontend(get, digest) {
  globalThis.__gradwidget_frontend_loads = (globalThis.__gradwidget_frontend_loads || 0) + 1;
  const [code, css] = await Promise.all([gunzipText(get("frontend_gz")), gunzipText(get("css_gz"))]);
  const mod = await importText(code);
  mod.setConstants(get("constants"));
  mod.setStylesheet(css, digest);
  return mod;
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

/**
 * The loader's exports, from its traits (`viz_gz`, `digest`, `frontend_gz`, `css_gz`,
 * `frontend_digest`, `constants`). Nothing is decompressed or compiled until a view asks.
 * @param {(name: string) => any} get
 */
export function loaderExports(get) {
  const digest = get("frontend_digest");
  const key = get("digest");
  const source = () => once(`__gradwidget_vizsrc_${key}`, () => gunzipText(get("viz_gz")));
  const viz = () => once(`__gradwidget_viz_${key}`, () => compile(source()));
  return {
    /** @returns {Promise<any>} the page's Graphviz instance */
    get viz() {
      return viz();
    },
    /** @returns {Promise<any>} the graph front-end module; Graphviz starts compiling
     * alongside, since the first view needs it next. */
    get frontend() {
      viz().catch(() => {}); // a failure shows when the view awaits viz
      return once(`__gradwidget_frontend_${digest}`, () => loadFrontend(get, digest));
    },
    /** Lay out off the main thread (started on first use); rejects without `errors`
     * when no worker can run here. */
    async layoutInWorker(/** @type {string} */ dot) {
      if (globalThis.__gradwidget_worker_broken) throw new Error("no layout worker");
      const render = await once(`__gradwidget_worker_${key}`, () => startWorker(source()));
      return render(dot);
    },
  };
}
