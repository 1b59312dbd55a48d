// Collapsed module boxes carry their gradients. A box is filled like its member with the
// largest gradient norm (node_styles.js resolveStyles); this adds a badge counting the
// parameters inside whose gradient holds NaN/Inf or is all zeros, and the aggregates the
// tooltip shows (ctx.moduleGrads). The definitions are those of gradwidget/_modstats.py,
// which w.module_stats() returns: max/mean norm over the members that have a sample, counts
// over parameters.
import { formatStat } from "./format.js";
import { nodeTable } from "./wire.js";

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * @typedef {{maxNorm: number, meanNorm: number, nodes: number, params: number,
 *   nonfinite: number, zero: number, maxRatio: number}} BoxGrads
 */

/**
 * Aggregates per drawn collapsed-module unit ("m<j>").
 * @param {Map<number, any>} latest statistics by node row (GradStore.latest)
 * @param {{id: string[], kind: string[]}} table the node table
 * @param {(id: string) => string|undefined} unitOf
 * @returns {Map<string, BoxGrads>}
 */
export function boxAggregates(latest, table, unitOf) {
  /** @type {Map<string, BoxGrads & {sum: number}>} */
  const out = new Map();
  const row = (unit) => {
    let r = out.get(unit);
    if (!r) {
      r = { maxNorm: NaN, meanNorm: NaN, nodes: 0, params: 0, nonfinite: 0, zero: 0, maxRatio: NaN, sum: 0 };
      out.set(unit, r);
    }
    return r;
  };
  const ids = table.id || [];
  for (let i = 0; i < ids.length; i++) {
    if (table.kind[i] !== "leaf") continue;
    const unit = unitOf(ids[i]);
    if (unit && unit[0] === "m") row(unit).params += 1;
  }
  for (const [i, s] of latest) {
    const unit = unitOf(ids[i]);
    if (!unit || unit[0] !== "m") continue;
    const r = row(unit);
    if (Number.isFinite(s.norm)) {
      r.nodes += 1;
      r.sum += s.norm;
      if (!(s.norm <= r.maxNorm)) r.maxNorm = s.norm;
    }
    if (table.kind[i] !== "leaf") continue;
    if (s.nonfinite > 0) r.nonfinite += 1;
    else if (s.norm === 0) r.zero += 1;
    if (Number.isFinite(s.update_ratio) && !(s.update_ratio <= r.maxRatio)) r.maxRatio = s.update_ratio;
  }
  for (const r of out.values()) {
    if (r.nodes) r.meanNorm = r.sum / r.nodes;
    delete r.sum;
  }
  return out;
}

/**
 * The badge text of a box: "2 NaN · 1 zero", "" when there is nothing to flag.
 * @param {BoxGrads|undefined} a
 */
export function badgeText(a) {
  if (!a) return "";
  const parts = [];
  if (a.nonfinite) parts.push(`${a.nonfinite} NaN`);
  if (a.zero) parts.push(`${a.zero} zero`);
  return parts.join(" · ");
}

/**
 * Tooltip rows of a collapsed module's gradients.
 * @param {BoxGrads|undefined} a
 * @returns {[string, string][]}
 */
export function tooltipRows(a) {
  if (!a || !a.nodes) return [];
  const rows = [
    ["‖grad‖ max / mean", `${formatStat(a.maxNorm)} / ${formatStat(a.meanNorm)} over ${a.nodes} nodes`],
    ["parameters", `${a.params}: ${a.nonfinite} with NaN/Inf, ${a.zero} all-zero gradients`],
  ];
  if (Number.isFinite(a.maxRatio)) rows.push(["largest ‖Δw‖/‖w‖", formatStat(a.maxRatio)]);
  return rows;
}

/**
 * Mount the box badges; fills ctx.moduleGrads(path) for the tooltip.
 * @param {{model: any, ctx: any, store: import("./live.js").GradStore}} args
 * @returns {() => void} cleanup
 */
export function mountModuleBadges({ model, ctx, store }) {
  /** @type {Map<string, BoxGrads>} */
  let aggs = new Map();
  let pending = false;
  ctx.moduleGrads = (path) => {
    const vm = model.get("view_modules") || {};
    const unit = Object.keys(vm).find((k) => vm[k] === path);
    return unit ? aggs.get(unit) : undefined;
  };
  const paint = () => {
    pending = false;
    const svg = ctx.svg();
    if (!svg) return;
    aggs = boxAggregates(store.latest, nodeTable(model), ctx.unitOf);
    for (const g of svg.querySelectorAll("g.node.gw-module")) {
      const a = aggs.get(g.getAttribute("data-name") || "");
      const text = badgeText(a);
      let badge = g.querySelector(":scope > text.gw-mod-badge");
      // For tests and tools: what the box stands for, next to what it shows.
      const data = a?.nodes ? { "grad-max": a.maxNorm, "nonfinite-params": a.nonfinite, "zero-params": a.zero } : {};
      for (const k of ["grad-max", "nonfinite-params", "zero-params"]) {
        if (k in data) g.setAttribute(`data-${k}`, String(data[k]));
        else g.removeAttribute(`data-${k}`);
      }
      if (!text) {
        badge?.remove();
        continue;
      }
      if (!badge) {
        badge = document.createElementNS(SVG_NS, "text");
        badge.setAttribute("class", "gw-mod-badge");
        const shape = g.querySelector("polygon, path");
        const bb = /** @type {any} */ (shape)?.getBBox?.();
        if (bb) {
          badge.setAttribute("x", String(bb.x + 2));
          badge.setAttribute("y", String(bb.y - 2));
        }
        g.appendChild(badge);
      }
      badge.textContent = text;
    }
  };
  const schedule = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(paint);
  };
  const off = store.subscribe(schedule);
  const offDrawn = ctx.on("drawn", schedule);
  model.on("change:view_modules", schedule);
  return () => {
    off();
    offDrawn?.();
    model.off("change:view_modules", schedule);
    delete ctx.moduleGrads;
  };
}
