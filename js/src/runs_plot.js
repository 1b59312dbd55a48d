// Run history plots: loss curves of every run overlaid (older faded, current highlighted,
// diverged marked), the lr-per-step schedule under them, and the lr range test plot.
// Loss points arrive as binary custom messages holding only the new points
// (gradwidget/_wire.py run_points); run metadata comes from the run_info trait.
import { hidpiContext as prepare } from "./canvas.js";
import { el } from "./dom.js";
import { float32 } from "./wire.js";
import { formatLr, formatTick } from "./format.js";

const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7F7F7F", "#000000"];
const MAX_LEGEND = 12;

/** @param {number} id */
export function runColor(id) {
  return PALETTE[(id - 1) % PALETTE.length];
}

/** @param {any} view a DataView/ArrayBuffer of little-endian float32 */
function floats(view) {
  return Array.from(float32({ data: view }));
}

/**
 * Axis mapping; log scale when all values are positive and span more than `decades`.
 * @param {number} lo @param {number} hi @param {number} a @param {number} b
 * @param {boolean} log
 */
function scale(lo, hi, a, b, log) {
  const f = log ? Math.log10 : (v) => v;
  const l = f(lo);
  const span = f(hi) - l || 1;
  return (v) => a + ((f(v) - l) / span) * (b - a);
}

function cssVar(el, name, fallback) {
  return getComputedStyle(el).getPropertyValue(name).trim() || fallback;
}

/**
 * Draw an axis frame with min/max labels.
 * @param {CanvasRenderingContext2D} g
 */
function frame(g, box, ylo, yhi, xlo, xhi, muted, xfmt = formatTick) {
  g.strokeStyle = muted;
  g.globalAlpha = 0.5;
  g.lineWidth = 1;
  g.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0);
  g.globalAlpha = 1;
  g.fillStyle = muted;
  g.textAlign = "right";
  g.textBaseline = "top";
  g.fillText(formatTick(yhi), box.x0 - 3, box.y0);
  g.textBaseline = "bottom";
  g.fillText(formatTick(ylo), box.x0 - 3, box.y1);
  g.textBaseline = "top";
  g.textAlign = "left";
  g.fillText(xfmt(xlo), box.x0, box.y1 + 2);
  g.textAlign = "right";
  g.fillText(xfmt(xhi), box.x1, box.y1 + 2);
}

/**
 * A plot's title in the top left corner of its frame.
 * @param {CanvasRenderingContext2D} g
 */
function caption(g, box, text, color) {
  g.globalAlpha = 1;
  g.setLineDash([]);
  g.fillStyle = color;
  g.textAlign = "left";
  g.textBaseline = "top";
  g.fillText(text, box.x0 + 4, box.y0 + 2);
}

/**
 * Mount the run plots into ctx.panels.bottom.
 * @param {{model: any, ctx: any}} args
 * @returns {() => void} cleanup
 */
export function mountRunsPlot({ model, ctx }) {
  /** @type {Map<number, {losses: number[], lrs: number[]}>} */
  const data = new Map();
  const get = (id) => {
    if (!data.has(id)) data.set(id, { losses: [], lrs: [] });
    return data.get(id);
  };

  const box = el("div", "gw-runs");
  el("div", "gw-panel-title", box, "loss per run");
  const empty = el("div", "gw-message gw-runs-empty", box, "No runs yet: run a %%train cell or w.train(step_fn).");
  const lossCanvas = el("canvas", "gw-loss-canvas", box);
  const lrCanvas = el("canvas", "gw-lr-canvas", box);
  const legend = el("div", "gw-runs-legend", box);
  const findBox = el("div", "gw-lrfind", box);
  const findCanvas = el("canvas", "gw-lrfind-canvas", findBox);
  const findText = el("div", "gw-lrfind-text", findBox);
  const useBtn = el("button", "gw-btn");
  useBtn.type = "button";
  ctx.panels.bottom.appendChild(box);

  let frameRequested = false;
  const redraw = () => {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      draw();
    });
  };

  function width() {
    return Math.max(320, Math.min(900, (box.clientWidth || 600) - 8));
  }

  function draw() {
    const runs = model.get("run_info") || [];
    // A job followed from its log (attach) has runs but nothing to train here.
    box.hidden = !model.get("trainable") && !runs.length;
    const ids = new Set(runs.map((r) => r.id));
    for (const id of [...data.keys()]) if (!ids.has(id)) data.delete(id);
    empty.hidden = runs.length > 0;
    lossCanvas.hidden = lrCanvas.hidden = runs.length === 0;
    drawLegend(runs);
    drawLrFind();
    if (!runs.length) return;
    const W = width();
    const muted = cssVar(box, "--gw-muted", "#666");
    const current = runs[runs.length - 1].id;

    // -- loss curves --
    const H = 200;
    const g = prepare(lossCanvas, W, H);
    const bx = { x0: 48, x1: W - 8, y0: 8, y1: H - 16 };
    let xmax = 1;
    let lo = Infinity;
    let hi = -Infinity;
    let firstMax = -Infinity;
    for (const r of runs) {
      const d = get(r.id);
      xmax = Math.max(xmax, r.steps || 0, d.losses.length);
      for (const v of d.losses) {
        if (!Number.isFinite(v)) continue;
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      if (d.losses.length && Number.isFinite(d.losses[0])) firstMax = Math.max(firstMax, d.losses[0]);
    }
    if (!Number.isFinite(lo)) {
      lo = 0;
      hi = 1;
    }
    // Diverged runs would squash the others: clip well above the largest starting loss.
    if (Number.isFinite(firstMax)) hi = Math.min(hi, firstMax * 1.5);
    if (hi <= lo) hi = lo + (Math.abs(lo) || 1);
    const log = lo > 0 && hi / lo > 30;
    const sx = scale(0, Math.max(xmax - 1, 1), bx.x0, bx.x1, false);
    const sy = scale(lo, hi, bx.y1, bx.y0, log);
    const clampY = (v) => Math.max(bx.y0, Math.min(bx.y1, Number.isFinite(v) ? sy(v) : bx.y0));
    frame(g, bx, lo, hi, 0, xmax, muted);
    g.save();
    g.beginPath();
    g.rect(bx.x0, bx.y0 - 1, bx.x1 - bx.x0, bx.y1 - bx.y0 + 2);
    g.clip();
    // Older runs first (faded), the current one last (on top, thicker).
    for (const r of runs) {
      const d = get(r.id);
      if (!d.losses.length) continue;
      const isCurrent = r.id === current;
      g.strokeStyle = runColor(r.id);
      g.globalAlpha = isCurrent ? 1 : 0.3;
      g.lineWidth = isCurrent ? 2.2 : 1.2;
      g.setLineDash(r.status === "diverged" || r.status === "error" ? [4, 3] : []);
      g.beginPath();
      d.losses.forEach((v, i) => (i ? g.lineTo(sx(i), clampY(v)) : g.moveTo(sx(i), clampY(v))));
      g.stroke();
      if (r.status === "diverged") {
        const i = d.losses.length - 1;
        const x = sx(i);
        const y = clampY(d.losses[i]);
        g.setLineDash([]);
        g.globalAlpha = isCurrent ? 1 : 0.6;
        g.strokeStyle = cssVar(box, "--gw-error", "#d32f2f");
        g.lineWidth = 2;
        g.beginPath();
        g.moveTo(x - 4, y - 4);
        g.lineTo(x + 4, y + 4);
        g.moveTo(x + 4, y - 4);
        g.lineTo(x - 4, y + 4);
        g.stroke();
      }
    }
    g.restore();
    caption(g, bx, log ? "loss (log)" : "loss", muted);

    // -- lr per step: the current run's actual lrs, and the planned schedule dashed --
    const LH = 64;
    const lg = prepare(lrCanvas, W, LH);
    const lb = { x0: 48, x1: W - 8, y0: 4, y1: LH - 14 };
    const cur = get(current).lrs;
    const preview = floats(model.get("schedule_preview"));
    const all = [...cur, ...preview].filter((v) => v > 0 && Number.isFinite(v));
    if (!all.length) return;
    let llo = Math.min(...all);
    let lhi = Math.max(...all);
    if (lhi <= llo) {
      llo /= 2;
      lhi *= 2;
    }
    const llog = lhi / llo > 10;
    const lsy = scale(llo, lhi, lb.y1, lb.y0, llog);
    frame(lg, lb, llo, lhi, 0, xmax, muted, () => "");
    const line = (vals, color, dash, alpha) => {
      if (!vals.length) return;
      const step = vals.length > 1 ? (xmax - 1) / (vals.length - 1) : 0;
      const xs = vals === preview ? (i) => sx(i * step) : (i) => sx(i);
      lg.strokeStyle = color;
      lg.globalAlpha = alpha;
      lg.lineWidth = 1.5;
      lg.setLineDash(dash);
      lg.beginPath();
      vals.forEach((v, i) => (i ? lg.lineTo(xs(i), lsy(v)) : lg.moveTo(xs(i), lsy(v))));
      lg.stroke();
    };
    line(preview, muted, [3, 3], 0.8);
    line(cur, runColor(current), [], 1);
    caption(lg, lb, `lr per step (${model.get("schedule")}; dashed: planned)`, muted);
  }

  function drawLegend(runs) {
    const current = runs.length ? runs[runs.length - 1].id : null;
    const items = [];
    const shown = runs.slice(-MAX_LEGEND).reverse();
    for (const r of shown) {
      const item = el("div", `gw-run gw-run-${r.status}${r.id === current ? " gw-run-current" : ""}`);
      item.dataset.run = String(r.id);
      el("span", "gw-swatch", item).style.background = runColor(r.id);
      const final = r.final_loss == null ? "–" : typeof r.final_loss === "number" ? formatTick(r.final_loss) : r.final_loss;
      const sched = r.schedule && r.schedule !== "constant" ? ` · ${r.schedule}` : "";
      el("span", "", item, `#${r.id} lr ${formatLr(r.lr)} · ${r.optimizer}${sched} · final loss ${final} · ${r.status}`);
      if (r.error) el("span", "gw-run-error", item, r.error);
      items.push(item);
    }
    if (runs.length > MAX_LEGEND) items.push(el("div", "gw-run gw-run-more", undefined, `… ${runs.length - MAX_LEGEND} older runs`));
    legend.replaceChildren(...items);
  }

  function drawLrFind() {
    const res = model.get("lr_find_plot") || {};
    const lrs = res.lrs ? floats(res.lrs) : [];
    const losses = res.losses ? floats(res.losses) : [];
    findBox.hidden = lrs.length < 2 || !model.get("trainable");
    if (findBox.hidden) return;
    const W = width();
    const H = 150;
    const muted = cssVar(box, "--gw-muted", "#666");
    const g = prepare(findCanvas, W, H);
    const bx = { x0: 48, x1: W - 8, y0: 8, y1: H - 16 };
    const n = Math.min(lrs.length, losses.length);
    const fin = losses.slice(0, n).filter(Number.isFinite);
    let lo = Math.min(...fin);
    let hi = Math.min(Math.max(...fin), fin[0] * 1.5);
    if (hi <= lo) hi = lo + (Math.abs(lo) || 1);
    const sx = scale(lrs[0], lrs[n - 1], bx.x0, bx.x1, true);
    const sy = scale(lo, hi, bx.y1, bx.y0, false);
    frame(g, bx, lo, hi, lrs[0], lrs[n - 1], muted, formatLr);
    g.save();
    g.beginPath();
    g.rect(bx.x0, bx.y0, bx.x1 - bx.x0, bx.y1 - bx.y0);
    g.clip();
    g.strokeStyle = cssVar(box, "--gw-accent", "#1976d2");
    g.lineWidth = 1.8;
    g.beginPath();
    for (let i = 0; i < n; i++) {
      const y = Number.isFinite(losses[i]) ? sy(losses[i]) : bx.y0;
      if (i) g.lineTo(sx(lrs[i]), y);
      else g.moveTo(sx(lrs[i]), y);
    }
    g.stroke();
    const s = res.suggestion;
    if (s) {
      g.strokeStyle = cssVar(box, "--gw-error", "#d32f2f");
      g.setLineDash([4, 3]);
      g.beginPath();
      g.moveTo(sx(s), bx.y0);
      g.lineTo(sx(s), bx.y1);
      g.stroke();
    }
    g.restore();
    caption(g, bx, "lr range test: loss vs lr (log)", muted);
    findText.replaceChildren();
    if (s) {
      findText.append(`suggested lr ≈ ${formatLr(s)} (steepest descent of the smoothed loss) `);
      useBtn.textContent = `use lr ${formatLr(Number(s.toPrecision(2)))}`;
      findText.append(useBtn);
    } else {
      findText.append("no suggestion: the loss did not fall during the sweep.");
    }
  }
  useBtn.addEventListener("click", () => {
    const s = (model.get("lr_find_plot") || {}).suggestion;
    if (!s) return;
    model.set("lr", Number(s.toPrecision(2)));
    model.save_changes();
  });

  /** @param {any} msg @param {any[]} buffers */
  const onMsg = (msg, buffers) => {
    if (!msg || msg.type !== "run_points") return;
    const d = get(msg.run);
    const losses = floats(buffers[0]);
    const lrs = floats(buffers[1]);
    let gap = false;
    const merge = (arr, start, vals) => {
      if (start === 0) return vals;
      if (start === arr.length) return arr.concat(vals);
      if (start < arr.length) return arr.slice(0, start).concat(vals);
      gap = true; // missed points (e.g. the view rendered mid-run): ask for everything
      return arr;
    };
    d.losses = merge(d.losses, msg.loss_start, losses);
    d.lrs = merge(d.lrs, msg.lr_start, lrs);
    if (gap) model.send({ type: "train", action: "hello" });
    redraw();
  };
  model.on("msg:custom", onMsg);
  const traits = ["change:run_info", "change:schedule_preview", "change:lr_find_plot", "change:trainable", "change:schedule"];
  for (const t of traits) model.on(t, redraw);
  const resize = typeof ResizeObserver !== "undefined" ? new ResizeObserver(redraw) : null;
  resize?.observe(box);
  // Runs made before this view existed: ask the kernel for their points.
  if ((model.get("run_info") || []).length) model.send({ type: "train", action: "hello" });
  redraw();
  return () => {
    model.off("msg:custom", onMsg);
    for (const t of traits) model.off(t, redraw);
    resize?.disconnect();
    box.remove();
  };
}
