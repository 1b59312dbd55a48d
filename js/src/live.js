// Live gradients: decodes the stats updates, colors the graph's nodes by gradient norm
// (restyle only, no re-layout), shows the legend and the lint, and feeds the detail panel
// and the gradient-flow plot. The updates are decoded by wire.js decodeStats.
import { mountDetail } from "./detail.js";
import { mountFlow } from "./grad_plots.js";
import { el } from "./dom.js";
import { formatStat } from "./format.js";
import { mergeStats, watchStatus } from "./live_stats.js";
import { mountModuleBadges } from "./module_badges.js";
import { mountCompare } from "./compare_view.js";
import { mountOrigin } from "./origin_view.js";
import { Frames, mountScrub } from "./scrub.js";
import { constants } from "./shared.js";
import { decodeStats, nodeTable } from "./wire.js";

/** Norm samples kept per node for the sparkline. */
export const HISTORY = 240;

/** @typedef {import("./wire.js").NodeStats} NodeStats */

// ---- colors -----------------------------------------------------------------------------
// Viridis (perceptually uniform, colorblind-safe), 9 stops from matplotlib's table.
const VIRIDIS = [
  "#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725",
].map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
/** Fill and outline of nodes whose gradient has NaN/Inf. */
export const NONFINITE = { fill: "#ff2bd6", stroke: "#b00020" };

/**
 * Viridis color at t in [0, 1].
 * @param {number} t
 * @returns {{css: string, dark: boolean}}
 */
export function viridis(t) {
  const x = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = [0, 1, 2].map((k) => Math.round(VIRIDIS[i][k] + (VIRIDIS[i + 1][k] - VIRIDIS[i][k]) * f));
  const luma = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  return { css: `rgb(${c.join(",")})`, dark: luma < 110 };
}

/** CSS gradient of the colormap, left (small norm) to right (large). */
export function viridisCss() {
  const stops = VIRIDIS.map((c, i) => `rgb(${c.join(",")}) ${(i / (VIRIDIS.length - 1)) * 100}%`);
  return `linear-gradient(to right, ${stops.join(", ")})`;
}

/**
 * Log-scale domain [lo, hi] of log10(norm) over finite positive norms.
 * @param {Iterable<NodeStats>} rows
 */
export function logDomain(rows) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of rows) {
    if (s.nonfinite > 0 || !(s.norm > 0) || !Number.isFinite(s.norm)) continue;
    const v = Math.log10(s.norm);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === Infinity) return null;
  if (hi - lo < 1e-6) return [lo - 0.5, hi + 0.5];
  return [lo, hi];
}

/**
 * The color scale after an update: it widens at once to cover new norms and shrinks back
 * by a fifth of the gap per update, so gradients shrinking over training show as colors
 * darkening instead of being renormalized away.
 * @param {number[]|null} prev
 * @param {number[]|null} cur
 */
export function relax(prev, cur) {
  if (!cur) return prev;
  if (!prev) return cur;
  return [Math.min(cur[0], prev[0] + 0.2 * (cur[0] - prev[0])), Math.max(cur[1], prev[1] + 0.2 * (cur[1] - prev[1]))];
}

/**
 * The smallest domain holding both (either may be null).
 * @param {number[]|null} a
 * @param {number[]|null} b
 */
export function cover(a, b) {
  if (!a || !b) return a || b;
  return [Math.min(a[0], b[0]), Math.max(a[1], b[1])];
}

/**
 * The style map for ctx.setNodeStyles from the latest stats.
 * @param {Map<number, NodeStats>} latest by node row
 * @param {string[]} ids node ids by row
 * @param {number[]|null} [domain] log10 range to map (default: this update's)
 * @returns {{styles: Map<string, any>, domain: number[]|null, nonfinite: number}}
 */
export function gradStyles(latest, ids, domain = logDomain(latest.values())) {
  const styles = new Map();
  let nonfinite = 0;
  for (const [row, s] of latest) {
    const id = ids[row];
    if (id === undefined) continue;
    if (s.nonfinite > 0) {
      nonfinite += 1;
      styles.set(id, {
        fill: NONFINITE.fill,
        stroke: NONFINITE.stroke,
        badge: "NaN",
        cls: "gw-nonfinite",
        value: Infinity,
      });
      continue;
    }
    // No norm measured yet (or none sent): no color rather than a made-up one.
    if (!domain || !(s.norm >= 0)) continue;
    const t = s.norm > 0 ? (Math.log10(s.norm) - domain[0]) / (domain[1] - domain[0]) : 0;
    const c = viridis(t);
    styles.set(id, { fill: c.css, cls: c.dark ? "gw-grad gw-dark" : "gw-grad", value: s.norm });
  }
  return { styles, domain, nonfinite };
}

// ---- the store shared by the live views ------------------------------------------------------
/**
 * Latest stats per node row plus a ring of norms per node. A statistic an update did not
 * compute (NaN on the wire, an all-NaN histogram) keeps the node's last measured value
 * (live_stats.js mergeStats; `measured` says which sample measured each).
 */
export class GradStore {
  /** @param {string[]} [columns] statistic columns the step slider keeps per frame */
  constructor(columns = []) {
    /** @type {Map<number, import("./live_stats.js").MergedStats>} the latest, live */
    this.live = new Map();
    /** @type {Map<number, number[]>} */
    this.history = new Map();
    this.liveStep = 0;
    this.updates = 0;
    /** @type {Set<(rows: NodeStats[]) => void>} */
    this.listeners = new Set();
    /** One compact frame per update, for the step slider (scrub.js). */
    this.frames = new Frames(columns);
    /** @type {{sample: number, time: number, latest: Map<number, any>}|null} a frame shown instead of live */
    this.pinned = null;
  }

  /** What the views show: a pinned frame's statistics, else the live ones. */
  get latest() {
    return this.pinned ? this.pinned.latest : this.live;
  }

  /** The sample the views show. */
  get step() {
    return this.pinned ? this.pinned.sample : this.liveStep;
  }

  /**
   * Show a frame (Frames.at) instead of the live statistics; null: live again. The views
   * are told with every row of what they now show.
   */
  pin(frame) {
    this.pinned = frame;
    const rows = [...this.latest.values()];
    for (const fn of this.listeners) fn(rows);
  }

  /** Forget everything (a new graph). */
  reset() {
    this.pinned = null;
    this.live.clear();
    this.history.clear();
    this.frames.list = [];
  }

  /** @param {{step: number, rows: NodeStats[]}} msg */
  apply(msg) {
    this.liveStep = msg.step;
    this.updates += 1;
    for (const s of msg.rows) {
      this.live.set(s.row, mergeStats(this.live.get(s.row), s, msg.step));
      // The sparkline: a measured norm, or NaN (a red tick) for NaN/Inf in the gradient.
      if (!(s.nonfinite > 0) && !(s.norm >= 0)) continue;
      let h = this.history.get(s.row);
      if (!h) this.history.set(s.row, (h = []));
      h.push(s.nonfinite > 0 ? NaN : s.norm);
      if (h.length > HISTORY) h.splice(0, h.length - HISTORY);
    }
    if (this.frames.columns.length) this.frames.push(msg.step, this.live);
    // A pinned frame stays on screen: the views hear of new samples on "live".
    for (const fn of this.listeners) fn(this.pinned ? [] : msg.rows);
  }

  /** @param {(rows: NodeStats[]) => void} fn @returns {() => void} */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

// ---- the view ----------------------------------------------------------------------------------
function mountLegend(ctx) {
  const legend = el("span", "gw-legend");
  legend.hidden = true;
  legend.title = "Node fill: L2 norm of the gradient, log scale (viridis). Magenta with a NaN badge: NaN/Inf in the gradient.";
  el("span", "gw-legend-label", legend, "|grad|");
  const lo = el("span", "", legend);
  el("span", "gw-legend-bar", legend).style.background = viridisCss();
  const hi = el("span", "", legend);
  const nan = el("span", "gw-legend-nan", legend, "NaN/Inf");
  nan.style.background = NONFINITE.fill;
  nan.style.borderColor = NONFINITE.stroke;
  ctx.panels.toolbar.appendChild(legend);
  return {
    el: legend,
    update(domain, nonfinite) {
      legend.hidden = false;
      lo.textContent = domain ? formatStat(10 ** domain[0]) : "–";
      hi.textContent = domain ? formatStat(10 ** domain[1]) : "–";
      nan.hidden = nonfinite === 0;
    },
  };
}

/**
 * The watch-status line next to the legend: the tiers' achieved rates ("grads 5 Hz ·
 * intermediates 1 Hz") and the watcher's notes, from the `grad_watch` trait.
 */
function mountStatus({ model, ctx }) {
  const box = el("span", "gw-rates");
  box.hidden = true;
  const rates = el("span", "gw-rates-hz", box);
  const notes = el("span", "gw-rates-notes", box);
  ctx.panels.toolbar.appendChild(box);
  const render = () => {
    const gw = model.get("grad_watch");
    const st = watchStatus(gw);
    box.hidden = !st;
    if (!st) return;
    rates.textContent = st.rates;
    rates.hidden = !st.rates;
    notes.replaceChildren(...st.notes.map((n) => el("span", `gw-rates-note gw-rates-${n.kind}`, null, n.text)));
    box.title = st.title;
    box.classList.toggle("gw-stopped", !st.watching);
    box.dataset.leafHz = String(gw.leaf_hz ?? 0);
    box.dataset.opHz = String(gw.op_hz ?? 0);
  };
  model.on("change:grad_watch", render);
  render();
  return () => {
    model.off("change:grad_watch", render);
    box.remove();
  };
}

function mountLint({ model, ctx }) {
  const box = el("div", "gw-lint");
  box.hidden = true;
  ctx.panels.bottom.prepend(box);
  const render = () => {
    const lints = model.get("grad_lint") || [];
    box.replaceChildren();
    box.hidden = lints.length === 0;
    for (const l of lints) {
      const item = el("div", `gw-lint-item gw-lint-${l.severity}`, box);
      item.dataset.code = l.code;
      if (l.node) {
        const head = el("button", "gw-lint-node", item, l.name);
        head.title = "Select this node";
        head.addEventListener("click", () => {
          if (!(nodeTable(model).id || []).includes(l.node)) return;
          model.set("selected", l.node);
          model.save_changes();
        });
      } else {
        // About the whole step (GradScaler, clipping): no node to select.
        el("span", "gw-lint-node gw-lint-global", item, l.name);
      }
      el("span", "gw-lint-msg", item, ` ${l.message} `);
      el("span", "gw-lint-advice", item, l.advice);
    }
  };
  model.on("change:grad_lint", render);
  render();
  return () => {
    model.off("change:grad_lint", render);
    box.remove();
  };
}

/**
 * Mount live gradients: node colors, legend, lint, detail panel and gradient flow.
 * @param {{model: any, host?: any, el: HTMLElement, ctx: any}} args
 * @returns {() => void} cleanup
 */
export function mountLive({ model, el, ctx }) {
  const store = new GradStore(constants().stat_columns);
  ctx.grads = store;
  // Style layers stack in creation order: the gradient colors first, marks above them.
  ctx.setNodeStyles(new Map(), "grad");
  const legend = mountLegend(ctx);
  /** Per-update restyle times (ms), for benchmarks and tests. */
  const timings = [];
  ctx.gradRestyleMs = timings;
  let pending = false;
  /** @type {number[]|null} color scale (log10 norms); widens at once, shrinks slowly */
  let scale = null;
  let scaledAt = -1; // the update the scale last moved for: a redraw alone does not move it

  const restyle = () => {
    pending = false;
    const t0 = performance.now();
    const ids = nodeTable(model).id || [];
    if (!store.pinned && store.updates !== scaledAt) {
      scale = relax(scale, logDomain(store.live.values()));
      scaledAt = store.updates;
    }
    // A scrubbed frame is drawn on the live scale widened to cover it, never stored: "live"
    // comes back to exactly the colors it left.
    const shown = store.pinned ? cover(scale, logDomain(store.latest.values())) : scale;
    const { styles, domain, nonfinite } = gradStyles(store.latest, ids, shown);
    ctx.setNodeStyles(styles, "grad");
    legend.update(domain, nonfinite);
    const ms = performance.now() - t0;
    timings.push(ms);
    if (timings.length > 100) timings.shift();
    legend.el.dataset.restyleMs = ms.toFixed(2);
    legend.el.dataset.updates = String(store.updates);
  };
  // At most one restyle per frame: updates arriving faster than the screen are merged.
  const schedule = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(restyle);
  };
  const onStats = () => {
    const view = model.get("grad_stats");
    if (!view || !view.byteLength) return;
    try {
      store.apply(decodeStats(view));
      legend.el.dataset.received = String(store.updates);
    } catch (e) {
      console.warn("gradwidget: bad stats update", e);
      return;
    }
    schedule();
  };
  const onNodes = () => {
    scale = null;
    store.reset();
    ctx.setNodeStyles(new Map(), "grad");
  };
  model.on("change:grad_stats", onStats);
  model.on("change:nodes", onNodes);
  const cleanups = [
    mountStatus({ model, ctx }),
    mountLint({ model, ctx }),
    mountDetail({ model, el, ctx, store }),
    mountFlow({ model, el, ctx, store }),
    mountOrigin({ model, ctx }),
    mountModuleBadges({ model, ctx, store }),
    mountScrub({ model, ctx, store, restyle }),
    mountCompare({ model, ctx }),
  ];
  onStats();
  return () => {
    model.off("change:grad_stats", onStats);
    model.off("change:nodes", onNodes);
    cleanups.forEach((fn) => fn());
    legend.el.remove();
  };
}
