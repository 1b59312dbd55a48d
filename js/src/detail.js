// Detail panel of the selected node: live histogram, norm sparkline, statistics, shape and
// the actual values of small tensors (data | grad).
// A statistic the latest sample did not compute shows its last measured value, labelled by
// how many samples ago it was measured, or "—" when it never was (live_stats.js).
import { drawHistogram, drawSparkline } from "./grad_plots.js";
import { el } from "./dom.js";
import { formatStat } from "./format.js";
import { histRange, staleness } from "./live_stats.js";
import { nodeTable } from "./wire.js";

const STATS = [
  ["norm", "‖grad‖"],
  ["mean", "mean"],
  ["std", "std"],
  ["min", "min"],
  ["max", "max"],
  ["nonfinite", "NaN/Inf"],
  ["update_ratio", "‖Δw‖/‖w‖"],
];
/** Shown for a statistic no sample has measured for this node. */
const MISSING = "—";

/**
 * Mount the detail panel (in the side slot) for the selected node.
 * @param {{model: any, el: HTMLElement, ctx: any, store: import("./live.js").GradStore}} args
 * @returns {() => void} cleanup
 */
export function mountDetail({ model, ctx, store }) {
  const box = el("div", "gw-detail");
  box.hidden = true;
  ctx.panels.side.appendChild(box);

  const title = el("div", "gw-panel-title", box);
  const meta = el("div", "gw-detail-meta", box);
  const empty = el("div", "gw-message", box);
  const table = el("table", "gw-detail-stats", box);
  const cells = {};
  const rows = {};
  for (const [key, label] of STATS) {
    const tr = el("tr", "", table);
    const th = el("th", "", tr, label);
    if (key === "update_ratio") th.title = "How much the last optimizer step changed this parameter, relative to its norm (~1e-3 is typical)";
    const td = el("td", "", tr);
    td.dataset.stat = key;
    cells[key] = td;
    rows[key] = tr;
  }
  const histTitle = el("div", "gw-detail-sub gw-detail-hist-title", box, "gradient histogram");
  const hist = el("canvas", "gw-hist", box);
  const sparkTitle = el("div", "gw-detail-sub", box);
  const spark = el("canvas", "gw-spark", box);
  const values = el("div", "gw-values", box);

  let pending = false;
  const row = () => {
    const id = model.get("selected");
    const r = ctx.nodeIndex?.get(id) ?? (nodeTable(model).id || []).indexOf(id);
    return r >= 0 ? r : undefined;
  };

  const render = () => {
    pending = false;
    const sel = model.get("selected");
    const r = row();
    // Nothing to show until gradients are being watched.
    box.hidden = !sel || r === undefined || store.updates === 0;
    if (box.hidden) return;
    box.dataset.node = sel;
    const nodes = nodeTable(model);
    const label = String(nodes.label?.[r] || sel).split("\n")[0];
    title.textContent = nodes.name?.[r] || label;
    const shape = nodes.shape?.[r];
    meta.textContent = [
      nodes.kind?.[r],
      nodes.op?.[r],
      shape ? `(${shape.join(", ")})` : null,
      nodes.module?.[r] ? `in ${nodes.module[r]}` : null,
    ]
      .filter(Boolean)
      .join(" · ");
    const s = store.latest.get(r);
    const has = Boolean(s);
    empty.hidden = has;
    empty.textContent = "No gradient sampled for this node yet.";
    for (const part of [table, histTitle, hist, sparkTitle, spark, values]) part.hidden = !has;
    if (!has) return;
    const now = store.step;
    for (const [key] of STATS) {
      const td = cells[key];
      if (key === "nonfinite") {
        td.textContent = Number.isFinite(s.nonfinite) ? String(s.nonfinite) : MISSING;
        continue;
      }
      const ago = staleness(s.measured?.[key], now);
      td.textContent = ago === null || Number.isNaN(s[key]) ? MISSING : formatStat(s[key]);
      if (ago) el("span", "gw-stale", td, ago);
      td.title = ago === null ? "not measured for this node yet" : ago ? `measured ${ago}` : "";
    }
    // Parameters only: the update ratio is measured over their optimizer step.
    rows.update_ratio.hidden = nodes.kind?.[r] !== "leaf" && s.measured?.update_ratio === undefined;
    cells.nonfinite.classList.toggle("gw-bad", s.nonfinite > 0);
    // The kept histogram with the range of the sample that made it; none drawn when there
    // is no histogram yet (intermediates at the default level never carry one).
    const range = s.hist ? histRange(s.histLo, s.histHi) : null;
    hist.hidden = !range;
    if (range) drawHistogram(hist, s.hist, range[0], range[1]);
    const histAgo = staleness(s.measured?.hist, now);
    histTitle.textContent = range
      ? `gradient histogram${histAgo ? ` (${histAgo})` : ""}`
      : "gradient histogram: not sampled for this node";
    const h = store.history.get(r) || [];
    sparkTitle.textContent = `‖grad‖ over the last ${h.length} sample${h.length === 1 ? "" : "s"}`;
    drawSparkline(spark, h);
    renderValues(values, s);
  };

  const schedule = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(render);
  };
  const off = store.subscribe((rows) => {
    const r = row();
    if (r !== undefined && rows.some((s) => s.row === r)) schedule();
    else if (box.hidden && r !== undefined) schedule();
  });
  const offSelect = ctx.on("select", schedule);
  model.on("change:selected", schedule);
  schedule();
  return () => {
    off();
    offSelect?.();
    model.off("change:selected", schedule);
    box.remove();
  };
}

/**
 * micrograd-style "data | grad" table for tensors of at most 64 elements.
 * @param {HTMLElement} host
 * @param {import("./wire.js").NodeStats} s
 */
function renderValues(host, s) {
  host.replaceChildren();
  if (!s.values) {
    host.hidden = true;
    return;
  }
  const t = el("table", "gw-values-table");
  const head = el("tr", "", t);
  for (const h of s.data ? ["#", "data", "grad"] : ["#", "grad"]) el("th", "", head, h);
  for (let i = 0; i < s.values.length; i++) {
    const tr = el("tr", "", t);
    const cols = s.data ? [i, formatStat(s.data[i]), formatStat(s.values[i])] : [i, formatStat(s.values[i])];
    for (const v of cols) el("td", "", tr, String(v));
  }
  host.appendChild(t);
}
