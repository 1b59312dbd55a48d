// The Jacobian heatmap: cells, labelled axes, hover read-out, colorbar and column strips.
import { gradientCss, paint } from "./colormap.js";
import { el } from "./dom.js";
import { formatValue } from "./format.js";

const MAX_W = 560;
const MAX_H = 420;
const MAX_CELL = 32;
const MIN_SIDE = 48;

/**
 * Cell size in CSS pixels: square where it fits, stretched so a thin J stays visible.
 * @param {number} rows
 * @param {number} cols
 * @returns {{cw: number, ch: number}}
 */
export function cellSize(rows, cols) {
  const cwMax = Math.max(1, Math.min(MAX_CELL, Math.floor(MAX_W / cols)));
  const chMax = Math.max(1, Math.min(MAX_CELL, Math.floor(MAX_H / rows)));
  const s = Math.min(cwMax, chMax);
  return {
    cw: Math.min(cwMax, Math.max(s, Math.ceil(MIN_SIDE / cols))),
    ch: Math.min(chMax, Math.max(s, Math.ceil(MIN_SIDE / rows))),
  };
}

/** Inclusive index range of a displayed cell: "5" or "4–7". */
function span(k, block, total) {
  const lo = k * block;
  const hi = Math.min(total, lo + block) - 1;
  return lo === hi ? `${lo}` : `${lo}–${hi}`;
}

/**
 * Mount the heatmap grid into `el`.
 * @param {object} opts
 * @param {HTMLElement} opts.el container
 * @param {import("./jacobian_axes.js").Axes} opts.axes
 * @param {Float32Array} opts.values displayed cells, row-major
 * @param {number} opts.vmax symmetric color limit
 * @param {string} opts.reduce "mean" | "absmax" (what a summarised cell holds)
 * @param {string} opts.outLabel e.g. "y (3, 2)"
 * @param {ReturnType<typeof import("./tooltip.js").makeTooltip>} opts.tooltip
 * @param {(row: number) => void} opts.onPickRow called with an output index on click
 * @returns {{selectRow: (row: number|null) => void, strip: (label: string, cls: string) => any}}
 */
export function mountHeatmap({ el: host, axes, values, vmax, reduce, outLabel, tooltip, onPickRow }) {
  const { rows, cols, rb, cb, m, n } = axes;
  const { cw, ch } = cellSize(rows, cols);
  const W = cols * cw;
  const H = rows * ch;
  const grid = el("div", "gw-jac-grid", host);
  grid.style.gridTemplateColumns = `auto ${W}px auto`;

  // Row 1: input groups over their columns.
  el("div", "", grid);
  const top = el("div", "gw-jac-groups", grid);
  for (const g of axes.groups) {
    const w = (g.size / cb) * cw;
    const shape = `(${g.shape.join(", ")}${g.shape.length === 1 ? "," : ""})`;
    const cell = el("div", "gw-jac-group", top, `${g.name} ${shape}`);
    cell.style.width = `${w}px`;
    cell.title = `${g.name}: shape ${shape}, columns ${g.start}–${g.start + g.size - 1}`;
  }
  el("div", "", grid);
  if (cols <= 40 && cw >= 16 && cb === 1) {
    el("div", "", grid);
    const ticks = el("div", "gw-jac-col-ticks", grid);
    for (let j = 0; j < cols; j++) {
      const label = axes.colLabel(j);
      const t = el("div", "gw-jac-col-tick", ticks, label.slice(label.indexOf("[")));
      t.style.width = `${cw}px`;
      t.title = label;
    }
    el("div", "", grid);
  }

  // Row 2: output axis, heatmap, colorbar.
  const left = el("div", "gw-jac-rows", grid);
  const axisLabel = el("div", "gw-jac-axis-label", left, outLabel);
  axisLabel.title = `outputs: ${m} rows`;
  if (rows <= 40 && ch >= 12 && rb === 1) {
    const ticks = el("div", "gw-jac-row-ticks", left);
    for (let i = 0; i < rows; i++) {
      const t = el("div", "gw-jac-row-tick", ticks, axes.rowLabel(i));
      t.style.height = `${ch}px`;
      t.style.lineHeight = `${ch}px`;
    }
  }
  const wrap = el("div", "gw-jac-heat", grid);
  wrap.style.width = `${W}px`;
  wrap.style.height = `${H}px`;
  const canvas = el("canvas", "gw-jac-canvas", wrap);
  canvas.style.width = `${W}px`;
  canvas.style.height = `${H}px`;
  paint(canvas, values, rows, cols, vmax);
  for (const g of axes.groups.slice(1)) {
    const sep = el("div", "gw-jac-sep", wrap);
    sep.style.left = `${(g.start / cb) * cw}px`;
  }
  const rowMark = el("div", "gw-jac-rowmark", wrap);
  rowMark.style.height = `${ch}px`;
  rowMark.hidden = true;
  const hover = el("div", "gw-jac-hover", wrap);
  hover.style.width = `${cw}px`;
  hover.style.height = `${ch}px`;
  hover.hidden = true;

  const bar = el("div", "gw-jac-colorbar", grid);
  const ramp = el("div", "gw-jac-ramp", bar);
  ramp.style.background = gradientCss();
  ramp.style.height = `${Math.max(60, Math.min(H, 240))}px`;
  const labels = el("div", "gw-jac-ramp-labels", bar);
  labels.style.height = ramp.style.height;
  el("div", "", labels, `+${formatValue(vmax)}`);
  el("div", "", labels, "0");
  el("div", "", labels, `−${formatValue(vmax)}`);

  const cellAt = (evt) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.floor(((evt.clientX - box.left) / box.width) * cols);
    const r = Math.floor(((evt.clientY - box.top) / box.height) * rows);
    return r >= 0 && r < rows && c >= 0 && c < cols ? [r, c] : null;
  };
  wrap.addEventListener("mousemove", (evt) => {
    const rc = cellAt(evt);
    if (!rc) return;
    const [r, c] = rc;
    hover.hidden = false;
    hover.style.left = `${c * cw}px`;
    hover.style.top = `${r * ch}px`;
    const v = values[r * cols + c];
    if (rb === 1 && cb === 1) {
      tooltip.show(evt, [
        `∂${axes.rowLabel(r)} / ∂${axes.colLabel(c)} = ${formatValue(v)}`,
        `row i = ${r}, column j = ${c}`,
      ]);
    } else {
      const what = reduce === "mean" ? "block mean" : "largest-magnitude entry";
      const r0 = r * rb;
      const c0 = c * cb;
      const r1 = Math.min(m, r0 + rb) - 1;
      const c1 = Math.min(n, c0 + cb) - 1;
      tooltip.show(evt, [
        `${what} = ${formatValue(v)}`,
        `rows ${span(r, rb, m)}: ${axes.rowLabel(r0)} … ${axes.rowLabel(r1)}`,
        `columns ${span(c, cb, n)}: ${axes.colLabel(c0)} … ${axes.colLabel(c1)}`,
      ]);
    }
  });
  wrap.addEventListener("mouseleave", () => {
    hover.hidden = true;
    tooltip.hide();
  });
  wrap.addEventListener("click", (evt) => {
    const rc = cellAt(evt);
    if (rc) onPickRow(rc[0] * rb);
  });

  return {
    /** Outline the displayed row holding output `row` (null: none). */
    selectRow(row) {
      rowMark.hidden = row === null;
      if (row !== null) rowMark.style.top = `${Math.floor(row / rb) * ch}px`;
    },
    /** Add a column-aligned strip row (vᵀJ, x.grad) under the heatmap. */
    strip(label, cls) {
      return mountStrip({ grid, label, cls, axes, W, tooltip });
    },
  };
}

/**
 * One row of colored cells aligned with the heatmap's columns.
 * @returns {{update: (values: Float32Array, vmax: number) => void}}
 */
function mountStrip({ grid, label, cls, axes, W, tooltip }) {
  const { cols, cb, n } = axes;
  el("div", "gw-jac-strip-label", grid, label);
  const wrap = el("div", `gw-jac-strip ${cls}`, grid);
  wrap.style.width = `${W}px`;
  const canvas = el("canvas", "", wrap);
  canvas.style.width = `${W}px`;
  const scale = el("div", "gw-jac-strip-scale", grid);
  let current = new Float32Array(0);
  wrap.addEventListener("mousemove", (evt) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.floor(((evt.clientX - box.left) / box.width) * cols);
    if (c < 0 || c >= current.length) return;
    const where =
      cb === 1 ? axes.colLabel(c) : `${axes.colLabel(c * cb)} … ${axes.colLabel(Math.min(n, (c + 1) * cb) - 1)}`;
    tooltip.show(evt, [`${label}: ${formatValue(current[c])}`, `${where} (column ${span(c, cb, n)})`]);
  });
  wrap.addEventListener("mouseleave", () => tooltip.hide());
  return {
    update(values, vmax) {
      current = values;
      paint(canvas, values, 1, cols, vmax);
      scale.textContent = `±${formatValue(vmax)}`;
      wrap.dataset.cells = String(values.length);
    },
  };
}
