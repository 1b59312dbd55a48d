// Where a NaN/Inf gradient starts, on the graph: the path from the output down to it (the
// `grad_origin` trait; the kernel finds it on a traced step, gradwidget/_origin.py) drawn as a
// restyle, never a re-layout: a red outline on the path's nodes and edges, a badge on the origin.

/** Outline of the path's nodes and edges. */
export const ORIGIN_STROKE = "#b00020";

/**
 * The drawn units along a path of node ids, consecutive duplicates merged (a collapsed
 * module box stands for all its members on the path).
 * @param {string[]} path node ids, output first
 * @param {(id: string) => string|undefined} unitOf
 * @returns {string[]}
 */
export function pathUnits(path, unitOf) {
  const out = [];
  for (const id of path) {
    const u = unitOf(id);
    if (u && out[out.length - 1] !== u) out.push(u);
  }
  return out;
}

/**
 * DOT edge titles ("src->dst", forward direction) joining consecutive units of a path.
 * @param {string[]} units output first
 * @returns {Set<string>}
 */
export function pathEdges(units) {
  const titles = new Set();
  for (let i = 0; i + 1 < units.length; i++) titles.add(`${units[i + 1]}->${units[i]}`);
  return titles;
}

/**
 * Mount the origin highlight (style layer "origin" plus edge classes).
 * @param {{model: any, ctx: any}} args
 * @returns {() => void} cleanup
 */
export function mountOrigin({ model, ctx }) {
  /** @type {Element[]} */
  let marked = [];
  const markEdges = (path) => {
    for (const e of marked) e.classList.remove("gw-nan-edge");
    marked = [];
    const svg = ctx.svg();
    if (!svg || !path.length) return;
    const titles = pathEdges(pathUnits(path, ctx.unitOf));
    for (const g of svg.querySelectorAll("g.edge")) {
      const t = g.querySelector(":scope > title")?.textContent;
      if (t && titles.has(t)) {
        g.classList.add("gw-nan-edge");
        marked.push(g);
      }
    }
  };
  const apply = () => {
    const o = model.get("grad_origin") || {};
    const path = Array.isArray(o.path) ? o.path : [];
    const styles = new Map();
    for (const id of path) styles.set(id, { stroke: ORIGIN_STROKE, cls: "gw-nan-path" });
    if (o.node) {
      styles.set(o.node, {
        stroke: ORIGIN_STROKE,
        cls: "gw-nan-path gw-nan-origin",
        badge: `${o.value || "NaN"} starts here`,
      });
    }
    ctx.setNodeStyles(styles, "origin");
    markEdges(path);
    const root = ctx.root;
    if (root) root.dataset.nanOrigin = o.node || "";
  };
  const onDrawn = () => markEdges((model.get("grad_origin") || {}).path || []);
  model.on("change:grad_origin", apply);
  const off = ctx.on("drawn", onDrawn);
  if ((model.get("grad_origin") || {}).node) apply();
  return () => {
    model.off("change:grad_origin", apply);
    off?.();
  };
}
