// gradwidget front-end entry: composes the header, graph pane and panels.
/**
 * # The shared `ctx` object (for views mounted next to the graph)
 *
 * `render()` creates one `ctx` per widget view and passes it to every mount function
 * (`mountX({ model, host, el, ctx }) -> cleanup`). Views talk through it, never to each other.
 *
 * Layout slots (plain DOM containers; append your own elements, they start empty and take no
 * room while empty):
 * - `ctx.panels.toolbar`  right end of the header bar (small buttons, selects, badges)
 * - `ctx.panels.side`     right of the graph, full graph height (~320px wide; e.g. node details)
 * - `ctx.panels.bottom`   below the graph, full width (e.g. plots, training controls)
 *
 * Events (`ctx.on(name, fn)` returns an `off()` function; `ctx.emit(name, payload)`):
 * - `"drawn"`  `{ svg, units }` after every (re-)layout; `units` maps DOT names
 *              (`n<i>` nodes, `m<j>` collapsed modules) to their `<g class="node">`.
 *              Styles set with `setNodeStyles` are re-applied before it fires.
 * - `"select"` the selected node id (string, "" for none), whichever side changed it.
 * - `"hover"`  `{ id, module }` of the node/module under the pointer, or `null`.
 *
 * Restyling without re-layout:
 * - `ctx.setNodeStyles(styles, layer = "default")` where `styles` is a
 *   `Map<nodeId, {fill?, stroke?, badge?, cls?, value?}>` keyed by the stable node ids of
 *   `nodeTable(model).id`. It REPLACES that layer's previous styles (nodes absent from the
 *   map revert to the theme look); layers (e.g. "grad", "train") do not clobber each other and
 *   later-created layers win per property. Only existing SVG elements change (inline style on
 *   the node's shape, a small text badge, classes): no layout, cheap at 10 Hz. Styles persist
 *   and are re-applied after expand/collapse re-layouts.
 *   Collapsed module boxes aggregate their members: a box takes fill/stroke/badge from the
 *   member with the largest `value` (a number, e.g. a gradient norm; members without `value`
 *   count as -Infinity, ties keep the first in forward order), and the union of all members'
 *   `cls` classes.
 * - `ctx.unitOf(nodeId)` the DOT name drawing that node now (`"n3"` or `"m0"`), or undefined.
 * - `ctx.elementOf(nodeId)` that unit's `<g class="node">` in the current SVG, or undefined.
 * - `ctx.svg()` the current `<svg>` element or null.
 * - `ctx.nodeIndex` `Map<nodeId, row>` into the column table `nodeTable(model)`
 *   (js/src/wire.js; the `nodes` trait is packed on the wire, never read it directly).
 * - `ctx.model`, `ctx.host`, `ctx.root` (the widget's root element).
 */
import "./widget.css";
import { mountGraph } from "./graph_view.js";
import { mountLive } from "./live.js";
import { mountControls } from "./controls.js";
import { mountRunsPlot } from "./runs_plot.js";
import { nodeTable } from "./wire.js";
import { el as h } from "./dom.js";
import { formatBytes } from "./format.js";
import { adoptStyles, watchTheme } from "./root_styles.js";

// The loader hands the kernel's shared constants over before any view renders (loader.js).
export { setConstants } from "./shared.js";
// ...and the stylesheet, applied per root (the page's document, or marimo's shadow root).
export { setStylesheet } from "./root_styles.js";

/**
 * The per-view context object documented above (the graph view fills in the restyle API).
 * @param {any} model
 * @param {any} host
 * @param {HTMLElement} root
 */
function createContext(model, host, root) {
  /** @type {Map<string, Set<Function>>} */
  const handlers = new Map();
  const slot = (cls) => h("div", cls);
  return {
    model,
    host,
    root,
    panels: {
      toolbar: slot("gw-toolbar-slot"),
      side: slot("gw-side"),
      bottom: slot("gw-bottom"),
    },
    /** @type {Map<string, number>} */
    nodeIndex: new Map(),
    /**
     * @param {string} name
     * @param {(payload: any) => void} fn
     * @returns {() => void} off
     */
    on(name, fn) {
      if (!handlers.has(name)) handlers.set(name, new Set());
      handlers.get(name).add(fn);
      return () => handlers.get(name)?.delete(fn);
    },
    /** @param {string} name @param {any} [payload] */
    emit(name, payload) {
      for (const fn of handlers.get(name) || []) {
        try {
          fn(payload);
        } catch (e) {
          console.warn(`gradwidget: a "${name}" handler failed`, e);
        }
      }
    },
    // Filled in by the graph view (no-ops until it mounts).
    setNodeStyles() {},
    unitOf() {
      return undefined;
    },
    elementOf() {
      return undefined;
    },
    svg() {
      return null;
    },
  };
}

function mountHeader({ model, el, ctx }) {
  const header = h("div", "gw-header");
  const summary = h("span", "gw-summary", header);
  const tools = h("span", "gw-tools", header);
  header.append(ctx.panels.toolbar);
  el.appendChild(header);
  ctx.panels.header = tools;
  const update = () => {
    const n = (nodeTable(model).id || []).length;
    const title = model.get("title");
    summary.textContent =
      `${title ? `${title} · ` : ""}${n} nodes · ` +
      `saved for backward: ${formatBytes(model.get("saved_bytes"))}`;
    summary.title =
      "Bytes of tensors autograd keeps from the forward pass until backward runs. " +
      "requires_grad=False, torch.no_grad() or frozen layers avoid saving them.";
  };
  model.on("change:saved_bytes", update);
  model.on("change:nodes", update);
  model.on("change:title", update);
  update();
  return () => {
    model.off("change:saved_bytes", update);
    model.off("change:nodes", update);
    model.off("change:title", update);
  };
}

// This module reaches the page once, through the loader widget; the per-instance `_esm` is
// stub.js, which imports it and calls render() only (an initialize() here would not run).
export default {
  render({ model, el, host }) {
    el.classList.add("gradwidget");
    const cleanups = [adoptStyles(el), watchTheme(el)];
    const ctx = createContext(model, host, el);
    cleanups.push(mountHeader({ model, el, ctx }));
    const body = h("div", "gw-body", el);
    cleanups.push(mountGraph({ model, host, el: body, ctx }));
    body.appendChild(ctx.panels.side);
    el.appendChild(ctx.panels.bottom);
    // Other views mount here: mountX({ model, host, el, ctx }) returning a cleanup.
    cleanups.push(mountLive({ model, host, el, ctx })); // live gradients
    cleanups.push(mountControls({ model, host, el, ctx })); // training controls
    cleanups.push(mountRunsPlot({ model, host, el, ctx })); // run history plots
    return () => cleanups.forEach((fn) => fn());
  },
};
