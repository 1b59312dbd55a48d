// The graph pane: lays out the DOT once per structure change and restyles in place.
import {
  MAX_UNITS,
  countUnits,
  describeError,
  getLoader,
  layout,
  layoutOffThread,
} from "./graphviz.js";
import { applyStyles, resolveStyles } from "./node_styles.js";
import { el } from "./dom.js";
import { panZoom } from "./panzoom.js";
import { dotText, moduleTable, nodeTable } from "./wire.js";

/** Above this many units, show "laying out N boxes…" and lay out in a Web Worker. */
const BIG_VIEW = 250;
/** Layouts kept per view, keyed by DOT text (expand then collapse reuses the first layout). */
const LAYOUT_CACHE = 4;

/** @param {number} n */
function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

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
  const tip = el("div", "gw-tooltip", pane);
  tip.hidden = true;
  const pz = panZoom(pane);

  // ---- header tools: depth, fit, export ------------------------------------------------
  const tools = ctx.panels.header || ctx.panels.toolbar;
  const depthLabel = el("label", "gw-depth", tools, "depth ");
  const depthSel = el("select", "", depthLabel);
  depthSel.title = "Module nesting level drawn open (auto keeps the view near 150 boxes)";
  const fitBtn = el("button", "gw-fit", tools, "Fit");
  fitBtn.title = "Fit the whole graph in view";
  const exportBtn = el("button", "gw-export", tools, "SVG");
  exportBtn.title = "Download the rendered graph as SVG";
  const pngBtn = el("button", "gw-export-png", tools, "PNG");
  pngBtn.title = "Download the rendered graph as PNG (2x)";

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
  exportBtn.addEventListener("click", () => exportSvg());
  pngBtn.addEventListener("click", () => exportPng().catch((e) => console.warn("gradwidget: PNG export failed", e)));

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
  /** @type {Element|null} node or cluster under the pointer */
  let hovered = null;

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
    if (n > MAX_UNITS) {
      return message(
        `This view has ${n.toLocaleString()} boxes, over the limit of ` +
          `${MAX_UNITS.toLocaleString()} the browser can lay out. Collapse modules or lower the depth.`,
        "gw-error gw-limit",
      );
    }
    status.textContent = n > BIG_VIEW ? `laying out ${n.toLocaleString()} boxes…` : "laying out…";
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
        next = n > BIG_VIEW ? await layoutOffThread(loader, viz, dot) : layout(viz, dot);
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
    if (n > BIG_VIEW) {
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
    hovered = null;
    tip.hidden = true;
    const nat = { w: 0, h: 0 };
    const vb = (svg.dataset.baseViewBox || svg.getAttribute("viewBox") || "0 0 0 0").split(" ");
    nat.h = Number(vb[3]) * (4 / 3);
    // Natural height, within [160, 600] px: small graphs stay small, big ones pan.
    pane.style.height = `${Math.round(Math.min(600, Math.max(160, nat.h + 8)))}px`;
    pz.setSvg(svg);
    restyle();
    restyleSelection(false);
  }

  /** The graph as a standalone SVG file's text and size in pt, or null when none is drawn. */
  function exportedSvg() {
    if (!svg) return null;
    const copy = /** @type {SVGSVGElement} */ (svg.cloneNode(true));
    const vb = svg.dataset.baseViewBox || svg.getAttribute("viewBox") || "";
    const [, , w, h] = vb.split(" ").map(Number);
    copy.setAttribute("viewBox", vb);
    copy.setAttribute("width", `${w}pt`);
    copy.setAttribute("height", `${h}pt`);
    copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
    copy.removeAttribute("data-base-view-box");
    // The file carries the light DOT colours (not the page's theme CSS): give it an opaque
    // white background so it reads in dark viewers too.
    const [x, y] = vb.split(" ").map(Number);
    const bg = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    for (const [k, v] of Object.entries({ x, y, width: w, height: h, fill: "#ffffff" })) {
      bg.setAttribute(k, String(v));
    }
    bg.setAttribute("class", "gw-export-bg");
    copy.insertBefore(bg, copy.firstChild);
    return { text: new XMLSerializer().serializeToString(copy), w, h };
  }

  /** @param {Blob} blob @param {string} ext */
  function download(blob, ext) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `${model.get("title") || "autograd-graph"}.${ext}`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function exportSvg() {
    const out = exportedSvg();
    if (out) download(new Blob([out.text], { type: "image/svg+xml" }), "svg");
  }

  /** The same SVG drawn on a canvas at 2x (less for huge graphs: canvases top out ~16k px). */
  async function exportPng() {
    const out = exportedSvg();
    if (!out) return;
    const px = { w: (out.w * 4) / 3, h: (out.h * 4) / 3 };
    const scale = Math.min(2, 16000 / Math.max(px.w, px.h, 1));
    const url = URL.createObjectURL(new Blob([out.text], { type: "image/svg+xml" }));
    try {
      const img = new Image();
      img.src = url;
      await img.decode();
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(px.w * scale));
      canvas.height = Math.max(1, Math.round(px.h * scale));
      canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((r) => canvas.toBlob(r, "image/png"));
      if (blob) download(blob, "png");
    } finally {
      URL.revokeObjectURL(url);
    }
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

  // ---- tooltip ---------------------------------------------------------------------------
  /** @returns {[string, string][]} rows for the tooltip of a unit or cluster */
  function describe(g) {
    const name = g.getAttribute("data-name") || "";
    const modules = moduleTable(model);
    if (g.classList.contains("cluster")) {
      const path = g.getAttribute("data-module") || "";
      const info = modules[path] || {};
      return [
        ["module", `${path} (${info.type || "Module"})`],
        ["ops", `${info.ops ?? "?"}, ${info.params ?? 0} params`],
        ["saved for backward", bytes(info.saved_bytes || 0)],
        ["", "click the frame or its label to collapse"],
      ];
    }
    const vm = model.get("view_modules") || {};
    if (name in vm) {
      const path = vm[name];
      const info = modules[path] || {};
      return [
        ["module", `${path} (${info.type || "Module"})`],
        ["contains", `${info.ops ?? 0} ops, ${info.params ?? 0} params`],
        ["saved for backward", bytes(info.saved_bytes || 0)],
        ["", "click to expand"],
      ];
    }
    const i = Number(name.slice(1));
    const t = nodeTable(model);
    const rows = [["kind", t.kind[i]]];
    if (t.name[i]) rows.push(["name", t.name[i]]);
    if (t.op[i]) rows.push(["op", t.op[i]]);
    if (t.shape[i]) rows.push(["shape", `(${t.shape[i].join(", ")})`]);
    if (t.dtype[i]) rows.push(["dtype", t.dtype[i]]);
    if (t.module[i]) rows.push(["module", t.module[i]]);
    if (t.source[i]) rows.push(["source", t.source[i]]);
    rows.push(["saved for backward", bytes(t.saved_bytes[i] || 0)]);
    return rows;
  }

  function hoverTarget(target) {
    const t = /** @type {Element} */ (target);
    return t?.closest?.("g.node") || t?.closest?.("g.cluster") || null;
  }

  pane.addEventListener("pointermove", (ev) => {
    const g = hoverTarget(ev.target);
    if (!g || pz.wasDrag()) {
      if (hovered) ctx.emit("hover", null);
      hovered = null;
      tip.hidden = true;
      return;
    }
    if (g !== hovered) {
      hovered = g;
      const rows = describe(g);
      tip.replaceChildren(
        ...rows.map(([k, v]) => {
          const row = el("div", k ? "" : "gw-hint");
          if (k) el("b", "", row, `${k}: `);
          row.appendChild(document.createTextNode(String(v)));
          return row;
        }),
      );
      const name = g.getAttribute("data-name") || "";
      const i = name[0] === "n" ? Number(name.slice(1)) : -1;
      ctx.emit("hover", {
        id: i >= 0 ? nodeTable(model).id[i] : null,
        module: (model.get("view_modules") || {})[name] || g.getAttribute("data-module") || null,
      });
    }
    tip.hidden = false;
    const r = pane.getBoundingClientRect();
    const x = ev.clientX - r.left + 14;
    const y = ev.clientY - r.top + 14;
    tip.style.left = `${Math.min(x, Math.max(0, r.width - tip.offsetWidth - 4))}px`;
    tip.style.top = `${Math.min(y, Math.max(0, r.height - tip.offsetHeight - 4))}px`;
  });
  pane.addEventListener("pointerleave", () => {
    hovered = null;
    tip.hidden = true;
  });

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
    pz.destroy();
    for (const [event, fn] of listeners) model.off(event, fn);
  };
}
