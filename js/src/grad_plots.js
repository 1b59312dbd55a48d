// Small canvas plots of live gradients: histogram, norm sparkline, gradient flow and the
// update-to-weight ratio row under it.
import { hidpiContext as prepare } from "./canvas.js";
import { el } from "./dom.js";
import { formatAxis } from "./format.js";
import { decades, RATIO_GUIDE } from "./live_stats.js";
import { nodeTable } from "./wire.js";

/** Theme colors read from CSS variables of the widget root. */
function colors(el) {
  const cs = getComputedStyle(el);
  return {
    fg: cs.getPropertyValue("--gw-fg").trim() || "#222",
    muted: cs.getPropertyValue("--gw-muted").trim() || "#666",
    accent: cs.getPropertyValue("--gw-accent").trim() || "#1976d2",
    border: cs.getPropertyValue("--gw-border").trim() || "#ddd",
  };
}

/**
 * Histogram of gradient values: 32 counts over [lo, hi].
 * @param {HTMLCanvasElement} canvas
 * @param {ArrayLike<number>} hist
 * @param {number} lo
 * @param {number} hi
 */
export function drawHistogram(canvas, hist, lo, hi, w = 280, h = 90) {
  const g = prepare(canvas, w, h);
  const c = colors(canvas);
  const pad = 14;
  // NaN or negative counts draw as empty bins; a range that is not finite draws no axis.
  const counts = Array.from(hist || [], (v) => (v > 0 && Number.isFinite(v) ? v : 0));
  if (!counts.length) return;
  const max = Math.max(1, ...counts);
  const bw = (w - 2) / counts.length;
  g.fillStyle = c.accent;
  for (let i = 0; i < counts.length; i++) {
    const bh = (counts[i] / max) * (h - pad - 2);
    if (bh > 0) g.fillRect(1 + i * bw, h - pad - bh, Math.max(1, bw - 1), bh);
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || hi <= lo) return;
  // Where zero falls, if inside the range.
  if (lo < 0 && hi > 0) {
    const x = 1 + ((0 - lo) / (hi - lo)) * (w - 2);
    g.strokeStyle = c.muted;
    g.setLineDash([2, 2]);
    g.beginPath();
    g.moveTo(x, 0);
    g.lineTo(x, h - pad);
    g.stroke();
    g.setLineDash([]);
  }
  g.fillStyle = c.muted;
  g.font = "10px sans-serif";
  g.textBaseline = "bottom";
  g.textAlign = "left";
  g.fillText(formatAxis(lo), 1, h);
  g.textAlign = "right";
  g.fillText(formatAxis(hi), w - 1, h);
}

/**
 * Sparkline of a node's gradient norm over samples (log scale when all positive).
 * NaN samples are marked with a red tick.
 * @param {HTMLCanvasElement} canvas
 * @param {number[]} values
 */
export function drawSparkline(canvas, values, w = 280, h = 48) {
  const g = prepare(canvas, w, h);
  const c = colors(canvas);
  const finite = values.filter((v) => Number.isFinite(v));
  if (!finite.length) return;
  const log = finite.every((v) => v > 0);
  const tf = (v) => (log ? Math.log10(v) : v);
  let lo = Math.min(...finite.map(tf));
  let hi = Math.max(...finite.map(tf));
  if (hi - lo < 1e-12) {
    lo -= 0.5;
    hi += 0.5;
  }
  const n = values.length;
  const x = (i) => (n === 1 ? w / 2 : (i / (n - 1)) * (w - 4) + 2);
  const y = (v) => h - 3 - ((tf(v) - lo) / (hi - lo)) * (h - 6);
  g.strokeStyle = c.accent;
  g.lineWidth = 1.5;
  g.beginPath();
  let open = false;
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) {
      open = false;
      g.save();
      g.strokeStyle = "#b00020";
      g.moveTo(x(i), 0);
      g.lineTo(x(i), h);
      g.restore();
      return;
    }
    if (open) g.lineTo(x(i), y(v));
    else g.moveTo(x(i), y(v));
    open = true;
  });
  g.stroke();
  const last = values[n - 1];
  if (Number.isFinite(last)) {
    g.fillStyle = c.accent;
    g.beginPath();
    g.arc(x(n - 1), y(last), 2.5, 0, 2 * Math.PI);
    g.fill();
  }
}

/** Left margin (tick labels) and per-parameter slots shared by the flow rows: columns align. */
const FLOW_LEFT = 44;
/** Height of the rotated parameter names under the last row. */
const NAMES_H = 40;

/**
 * The x slot of parameter i of n on a canvas w wide.
 * @param {number} i
 * @param {number} n
 * @param {number} w
 */
function slotOf(i, n, w) {
  const slot = (w - FLOW_LEFT) / Math.max(1, n);
  return { x0: FLOW_LEFT + i * slot + slot * 0.15, bw: slot * 0.7 };
}

/**
 * Horizontal decade grid lines with "1eN" labels from 10^lo to 10^hi.
 * @param {CanvasRenderingContext2D} g
 * @param {any} c colors
 * @param {number} lo
 * @param {number} hi
 * @param {(v: number) => number} y
 * @param {number} w
 */
function decadeGrid(g, c, lo, hi, y, w) {
  g.font = "10px sans-serif";
  g.fillStyle = c.muted;
  g.strokeStyle = c.border;
  g.textAlign = "right";
  g.textBaseline = "middle";
  // At most ~6 labelled lines: every k-th decade on tall ranges.
  const every = Math.max(1, Math.ceil((hi - lo) / 6));
  for (let e = lo; e <= hi; e++) {
    const yy = y(10 ** e);
    g.beginPath();
    g.moveTo(FLOW_LEFT, yy);
    g.lineTo(w, yy);
    g.stroke();
    if ((e - lo) % every === 0) g.fillText(`1e${e}`, FLOW_LEFT - 4, yy);
  }
}

/**
 * The parameter names, rotated, under the slots (the rows above share these columns).
 * @param {CanvasRenderingContext2D} g
 * @param {any} c colors
 * @param {{name: string}[]} layers
 * @param {number} w
 * @param {number} base y of the row's bottom
 */
function drawNames(g, c, layers, w, base) {
  layers.forEach((l, i) => {
    const { x0, bw } = slotOf(i, layers.length, w);
    g.save();
    g.translate(x0 + bw / 2, base + 4);
    g.rotate(-Math.PI / 5);
    g.fillStyle = c.fg;
    g.textAlign = "right";
    g.textBaseline = "middle";
    const name = l.name.length > 14 ? `…${l.name.slice(-13)}` : l.name;
    g.fillText(name, 0, 0);
    g.restore();
  });
}

/**
 * Gradient flow: mean |grad| (dark) and max |grad| (light) of each parameter, in forward
 * order, on a log axis. NaN values draw nothing; NaN/Inf in a gradient is a red bar.
 * @param {HTMLCanvasElement} canvas
 * @param {{name: string, absmean: number, absmax: number, nonfinite: number}[]} layers
 * @param {{names?: boolean}} [opts] `names: false` leaves the names to a row below
 */
export function drawFlow(canvas, layers, w = 560, h = 150, { names = true } = {}) {
  const g = prepare(canvas, w, h);
  const c = colors(canvas);
  const bottom = names ? NAMES_H : 4;
  const top = 6;
  const vals = layers.flatMap((l) => [l.absmean, l.absmax]).filter((v) => v > 0 && Number.isFinite(v));
  // All NaN/Inf (or all zero): still draw the axis and the red NaN bars.
  const lo = vals.length ? Math.floor(Math.log10(Math.min(...vals))) : -1;
  let hi = vals.length ? Math.ceil(Math.log10(Math.max(...vals))) : 0;
  if (hi === lo) hi = lo + 1;
  const y = (v) => top + (1 - (Math.log10(v) - lo) / (hi - lo)) * (h - top - bottom);
  decadeGrid(g, c, lo, hi, y, w);
  const base = h - bottom;
  layers.forEach((l, i) => {
    const { x0, bw } = slotOf(i, layers.length, w);
    if (l.nonfinite > 0) {
      g.fillStyle = "#b00020";
      g.fillRect(x0, top, bw, base - top);
    } else {
      if (l.absmax > 0 && Number.isFinite(l.absmax)) {
        g.fillStyle = "rgba(33,145,140,0.35)";
        g.fillRect(x0, y(l.absmax), bw, base - y(l.absmax));
      }
      if (l.absmean > 0 && Number.isFinite(l.absmean)) {
        g.fillStyle = "rgb(59,82,139)";
        g.fillRect(x0 + bw * 0.2, y(l.absmean), bw * 0.6, base - y(l.absmean));
      }
    }
  });
  if (names) drawNames(g, c, layers, w, base);
}

/**
 * The update-to-weight ratio row: ‖Δw‖/‖w‖ of each parameter's last optimizer step (a dot
 * per parameter, log axis, the columns of the flow row above) with a dashed guide line at
 * the familiar 1e-3. NaN (not measured) and zero ratios are skipped.
 * @param {HTMLCanvasElement} canvas
 * @param {{name: string, ratio: number}[]} layers
 * @param {{names?: boolean}} [opts] `names: true` draws the parameter names under the row
 * @returns {number} how many ratios were drawn
 */
export function drawRatio(canvas, layers, w = 560, h = 110, { names = true } = {}) {
  const g = prepare(canvas, w, h);
  const c = colors(canvas);
  const bottom = names ? NAMES_H : 4;
  const top = 6;
  const [lo, hi] = decades(layers.map((l) => l.ratio), RATIO_GUIDE);
  const y = (v) => top + (1 - (Math.log10(v) - lo) / (hi - lo)) * (h - top - bottom);
  decadeGrid(g, c, lo, hi, y, w);
  const guide = y(RATIO_GUIDE);
  g.strokeStyle = c.fg;
  g.globalAlpha = 0.6;
  g.setLineDash([5, 4]);
  g.beginPath();
  g.moveTo(FLOW_LEFT, guide);
  g.lineTo(w, guide);
  g.stroke();
  g.setLineDash([]);
  g.globalAlpha = 1;
  g.fillStyle = c.muted;
  g.textAlign = "right";
  g.textBaseline = "bottom";
  g.fillText("typical 1e-3", w - 2, guide - 1);
  let drawn = 0;
  layers.forEach((l, i) => {
    const r = l.ratio;
    if (!(r > 0) || !Number.isFinite(r)) return;
    const { x0, bw } = slotOf(i, layers.length, w);
    const cx = x0 + bw / 2;
    const cy = y(r);
    // A thin stem from the guide line says at a glance how far off the step is.
    g.strokeStyle = c.accent;
    g.beginPath();
    g.moveTo(cx, guide);
    g.lineTo(cx, cy);
    g.stroke();
    g.fillStyle = c.accent;
    g.beginPath();
    g.arc(cx, cy, 3, 0, 2 * Math.PI);
    g.fill();
    drawn += 1;
  });
  if (names) drawNames(g, c, layers, w, h - bottom);
  return drawn;
}

/**
 * Mount the gradient-flow view (below the graph) fed by the live store: per parameter the
 * gradient magnitudes, and under them the update-to-weight ratio once one was measured.
 * @param {{model: any, el: HTMLElement, ctx: any, store: import("./live.js").GradStore}} args
 * @returns {() => void} cleanup
 */
export function mountFlow({ model, ctx, store }) {
  const box = el("div", "gw-flow");
  box.hidden = true;
  el("div", "gw-panel-title", box, "Gradient flow: mean |grad| (dark) and max |grad| (light) per parameter, forward order");
  const canvas = el("canvas", "gw-flow-canvas", box);
  const ratioBox = el("div", "gw-ratio", box);
  ratioBox.hidden = true;
  el(
    "div",
    {
      class: "gw-detail-sub",
      title: "‖Δw‖/‖w‖ measured over each optimizer step; around 1e-3 is the usual healthy value",
    },
    ratioBox,
    "update / weight ‖Δw‖/‖w‖ per optimizer step (log; dashed: 1e-3)",
  );
  const ratioCanvas = el("canvas", "gw-ratio-canvas", ratioBox);
  ctx.panels.bottom.appendChild(box);
  let pending = false;

  const draw = () => {
    pending = false;
    const nodes = nodeTable(model);
    const kinds = nodes.kind || [];
    const layers = [];
    for (let row = 0; row < kinds.length; row++) {
      if (kinds[row] !== "leaf") continue;
      const s = store.latest.get(row);
      if (!s) continue;
      layers.push({
        name: nodes.name?.[row] || String(nodes.label?.[row] || row).split("\n")[0],
        absmean: s.absmean,
        absmax: Math.max(Math.abs(s.min), Math.abs(s.max)),
        nonfinite: s.nonfinite,
        ratio: s.update_ratio,
        rank: nodes.use_rank?.[row] ?? row,
      });
    }
    // Forward order: a parameter ranks by the first op that used it (see Graph.use_rank).
    layers.sort((a, b) => a.rank - b.rank);
    box.hidden = layers.length === 0;
    if (!layers.length) return;
    const width = Math.max(320, Math.min(900, (ctx.root?.clientWidth || 600) - 16));
    const ratios = layers.filter((l) => l.ratio > 0 && Number.isFinite(l.ratio)).length;
    ratioBox.hidden = ratios === 0;
    drawFlow(canvas, layers, width, ratios ? 116 : 150, { names: !ratios });
    if (ratios) drawRatio(ratioCanvas, layers, width, 110, { names: true });
    box.dataset.layers = String(layers.length);
    box.dataset.ratios = String(ratios);
  };
  const off = store.subscribe(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(draw);
  });
  return () => {
    off();
    box.remove();
  };
}
