// The graph pane: lays out the DOT once per structure change and restyles in place; the
// header's depth and fit tools. Export (graph_export.js) and the tooltip (tooltip.js) plug in.
import { countUnits, describeError, getLoader, layout, layoutOffThread } from "./graphviz.js";
import { applyStyles, resolveStyles } from "./node_styles.js";
import { el } from "./dom.js";
import { mountExport } from "./graph_export.js";
import { mountFind } from "./graph_find.js";
import { panZoom } from "./panzoom.js";
import { constants } from "./shared.js";
import { mountGraphTooltip } from "./tooltip.js";
import { dotText, nodeTable } from "./wire.js";

/** Layouts kept per view, keyed by DOT text (expand then collapse reuses the first layout). */
const LAYOUT_CACHE = 4;

/**
 * Outermost collapsed module among `path` and its ancestors.
 * @param {string|null} path
 * @param {Map<string, string>} boxOfPath collapsed module path -> DOT name
 */
function boxFor(path, boxOfPath) {
  if (!path) return undefined;
  const parts = path.split(".");
  for (let i = 1; i <= parts.length; i += 1) {
    const name = boxOfPath.get(parts.slice(0, i).join("."));
    if (name) return name;
  }
  return undefined;
}

/**
 * Mount the graph view (pane, header tools, tooltip) and fill in ctx's restyle API.
 * @param {{model: any, host: any, el: HTMLElement, ctx: any}} args
 * @returns {() => void} cleanup
 */
export function mountGraph({ model, host, el: parent, ctx }) {
  const pane = el("div", "gw-graph", parent);
  pane.tabIndex = 0;
  const stage = el("div", "gw-stage", pane);
  const status = el("div", "gw-status", pane);
  status.hidden = true;
  const pz = panZoom(pane);
  const tooltip = mountGraphTooltip({ model, pane, ctx, wasDrag: () => pz.wasDrag() });

  // ---- header tools: depth, fit, export ------------------------------------------------
  const tools = ctx.panels.header || ctx.panels.toolbar;
  const depthLabel = el("label", "gw-depth", tools, "depth ");
  const depthSel = el("select", "", depthLabel);
  depthSel.title = "Module nesting level drawn open (auto keeps the view near 150 boxes)";
  const fitBtn = el("button", "gw-fit", tools, "Fit");
  fitBtn.title = "Fit the whole graph in view";
  mountExport({ model, tools, svg: () => svg });
  const unmountFind = mountFind({ model, ctx, pane, tools });

  const fillDepth = () => {
    const max = model.get("max_depth") || 0;
    const cur = model.get("depth");
    const opts = [["auto", "auto"]];
    for (let d = 0; d <= max; d += 1) opts.push([String(d), String(d)]);
    depthSel.replaceChildren(
      ...opts.map(([v, t]) => {
        const o = el("option", "", undefined, t);
        o.value = v;
        return o;
      }),
    );
    depthSel.value = cur === null || cur === undefined ? "auto" : String(cur);
  };
  depthSel.addEventListener("change", () => {
    const v = depthSel.value;
    model.set("depth", v === "auto" ? null : Number(v));
    model.set("expanded", []); // the depth control is the coarse reset
    model.save_changes();
  });
  fitBtn.addEventListener("click", () => pz.fit());

  // ---- state ---------------------------------------------------------------------------
  /** @type {SVGSVGElement|null} */
  let svg = null;
  /** @type {Map<string, Element>} DOT name -> node group */
  let units = new Map();
  /** @type {Map<string, string>} collapsed module path -> DOT name */
  let boxOfPath = new Map();
  /** @type {Map<string, Map<string, any>>} */
  const layers = new Map();
  const applied = new Set();
  /** @type {Map<string, SVGSVGElement>} */
  const cache = new Map();
  let generation = 0;

  const reindex = () => {
    ctx.nodeIndex = new Map((nodeTable(model).id || []).map((id, i) => [id, i]));
  };
  reindex();
  const reboxes = () => {
    boxOfPath = new Map(Object.entries(model.get("view_modules") || {}).map(([n, p]) => [p, n]));
  };
  reboxes();

  /** @param {string} id */
  function unitOf(id) {
    const i = ctx.nodeIndex.get(id);
    if (i === undefined) return undefined;
    const own = `n${i}`;
    if (units.has(own)) return own;
    return boxFor(nodeTable(model).module[i], boxOfPath) ?? (units.size ? undefined : own);
  }
  ctx.unitOf = unitOf;
  ctx.elementOf = (id) => units.get(unitOf(id) || "");
  ctx.svg = () => svg;
  ctx.center = (id) => pz.center(ctx.elementOf(id));
  ctx.collapse = (path) => collapse(path);
  ctx.setNodeStyles = (styles, layer = "default") => {
    layers.set(layer, styles instanceof Map ? styles : new Map(Object.entries(styles || {})));
    restyle();
  };

  function restyle() {
    if (!svg) return;
    applyStyles(units, resolveStyles(layers, unitOf), applied);
  }

  // ---- drawing ---------------------------------------------------------------------------
  function message(text, cls = "") {
    svg = null;
    units = new Map();
    applied.clear();
    stage.replaceChildren(el("div", `gw-message ${cls}`.trim(), undefined, text));
    status.hidden = true;
    pane.style.height = "";
  }

  async function draw() {
    const gen = ++generation;
    const err = model.get("view_error");
    if (err) return message(err, "gw-error gw-limit");
    const dot = dotText(model);
    if (!dot) return message("Nothing to draw.");
    const n = countUnits(dot);
    const { max_units: maxUnits, big_view: bigView } = constants();
    if (n > maxUnits) {
      return message(
        `This view has ${n.toLocaleString()} boxes, over the limit of ` +
          `${maxUnits.toLocaleString()} the browser can lay out. Collapse modules or lower the depth.`,
        "gw-error gw-limit",
      );
    }
    status.textContent = n > bigView ? `laying out ${n.toLocaleString()} boxes…` : "laying out…";
    status.hidden = false;
    let viz;
    let loader;
    try {
      loader = await getLoader(model, host);
      viz = await loader.viz;
    } catch (e) {
      if (gen === generation) message(`Could not load Graphviz: ${describeError(e)}`, "gw-error");
      return;
    }
    if (gen !== generation) return;
    const t0 = performance.now();
    let next = cache.get(dot);
    if (!next) {
      try {
        // Big views in the worker (seconds for ~2,000 nodes); small ones at once, here.
        next = n > bigView ? await layoutOffThread(loader, viz, dot) : layout(viz, dot);
      } catch (e) {
        if (gen !== generation) return;
        return message(`Graphviz could not lay out this graph: ${describeError(e)}`, "gw-error");
      }
      pane.dataset.layoutMs = (performance.now() - t0).toFixed(1);
      prepare(next);
      // Layouts so far (cache hits excluded): tests check appearance never re-lays out.
      pane.dataset.layouts = String(Number(pane.dataset.layouts || 0) + 1);
      // Cached even if a newer view was asked for meanwhile: going back reuses it.
      cache.set(dot, next);
      if (cache.size > LAYOUT_CACHE) cache.delete(cache.keys().next().value);
      if (gen !== generation) return;
    }
    if (n > bigView) {
      // Parsing a big SVG and showing it are each ~0.3 s here: two tasks, not one freeze.
      await new Promise((r) => setTimeout(r, 0));
      if (gen !== generation) return;
    }
    show(next);
    const ms = performance.now() - t0;
    pane.dataset.renderMs = ms.toFixed(1);
    pane.dataset.units = String(units.size);
    (globalThis.__gradwidget_renders ||= []).push({ units: units.size, ms });
    ctx.emit("drawn", { svg, units });
  }

  /**
   * One-time post-processing of a fresh layout: unit names and module paths as data
   * attributes; the tooltip <a> wrappers unwrapped so shapes are direct children of their
   * `g.node` (simple CSS, no native tooltip doubling ours).
   */
  function prepare(s) {
    s.classList.add("gw-svg");
    for (const g of s.querySelectorAll("g.node, g.cluster")) {
      const title = g.querySelector(":scope > title");
      if (title) {
        g.setAttribute("data-name", title.textContent || "");
        title.remove();
      }
      for (const wrap of g.querySelectorAll(":scope > g")) {
        const a = wrap.querySelector(":scope > a");
        if (!a) continue;
        if (g.classList.contains("cluster")) {
          g.setAttribute("data-module", a.getAttribute("xlink:title") || a.getAttribute("title") || "");
        }
        wrap.replaceWith(...a.childNodes);
      }
    }
  }

  function show(next) {
    reboxes();
    svg = next;
    units = new Map();
    for (const g of svg.querySelectorAll("g.node")) units.set(g.getAttribute("data-name"), g);
    for (const g of units.values()) {
      const s = /** @type {any} */ (g);
      s.__gwStyle = undefined; // cached layouts keep old inline styles: repaint all
    }
    applied.clear();
    for (const g of svg.querySelectorAll(".gw-selected, .gw-selected-inside")) {
      g.classList.remove("gw-selected", "gw-selected-inside");
    }
    stage.replaceChildren(svg);
    status.hidden = true;
    // The pointer's old target is gone: no stale tooltip until it moves again.
    tooltip.reset();
    const nat = { w: 0, h: 0 };
    const vb = (svg.dataset.baseViewBox || svg.getAttribute("viewBox") || "0 0 0 0").split(" ");
    nat.h = Number(vb[3]) * (4 / 3);
    // Natural height, within [160, 600] px: small graphs stay small, big ones pan.
    pane.style.height = `${Math.round(Math.min(600, Math.max(160, nat.h + 8)))}px`;
    pz.setSvg(svg);
    restyle();
    restyleSelection(false);
  }

  // ---- selection -------------------------------------------------------------------------
  function restyleSelection(emit = true) {
    if (svg) {
      for (const g of svg.querySelectorAll(".gw-selected, .gw-selected-inside")) {
        g.classList.remove("gw-selected", "gw-selected-inside");
      }
    }
    const sel = model.get("selected");
    if (sel && svg) {
      const unit = unitOf(sel);
      const g = unit && units.get(unit);
      if (g) {
        // Inside a collapsed module: mark the box, differently from a direct selection.
        g.classList.add(unit[0] === "m" ? "gw-selected-inside" : "gw-selected");
        if (emit) pz.center(g);
      }
    }
    if (emit) ctx.emit("select", sel || "");
  }

  // ---- clicks: select, expand, collapse --------------------------------------------------
  pane.addEventListener("click", (ev) => {
    if (pz.wasDrag()) return;
    const t = /** @type {Element} */ (ev.target);
    const node = t.closest("g.node");
    if (node) {
      const name = node.getAttribute("data-name") || "";
      const vm = model.get("view_modules") || {};
      if (name in vm) {
        const path = vm[name];
        model.set("expanded", [...new Set([...model.get("expanded"), path])]);
      } else if (name[0] === "n") {
        const id = nodeTable(model).id[Number(name.slice(1))];
        model.set("selected", model.get("selected") === id ? "" : id);
      }
      model.save_changes();
      return;
    }
    const cluster = t.closest("g.cluster");
    if (cluster) collapse(cluster.getAttribute("data-module") || "");
  });

  /**
   * Collapse an open module. `expanded` only opens modules, so a module opened by the depth
   * setting is collapsed by pinning every other open module in `expanded` and lowering the
   * depth to 0: the view is the same minus that module's subtree.
   * @param {string} path
   */
  function collapse(path) {
    if (!path || !svg) return;
    const inside = (p) => p === path || p.startsWith(`${path}.`);
    const open = [...svg.querySelectorAll("g.cluster")]
      .map((g) => g.getAttribute("data-module") || "")
      .filter((p) => p && !inside(p));
    const leaves = open.filter((p) => !open.some((q) => q !== p && q.startsWith(`${p}.`)));
    model.set("depth", 0);
    model.set("expanded", leaves);
    model.save_changes();
  }

  // ---- wiring ----------------------------------------------------------------------------
  const onNodes = () => {
    reindex();
    cache.clear();
  };
  const onModules = () => {
    reboxes();
    restyle();
    restyleSelection(false);
  };
  const onSelected = () => restyleSelection(true);
  const listeners = [
    ["change:dot", draw],
    ["change:view_error", draw],
    ["change:nodes", onNodes],
    ["change:view_modules", onModules],
    ["change:selected", onSelected],
    ["change:max_depth", fillDepth],
    ["change:depth", fillDepth],
  ];
  for (const [event, fn] of listeners) model.on(event, fn);
  fillDepth();
  draw();
  return () => {
    generation += 1;
    unmountFind();
    tooltip.destroy();
    pz.destroy();
    for (const [event, fn] of listeners) model.off(event, fn);
  };
}
