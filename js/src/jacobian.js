// Jacobian explorer front-end (model: gradwidget/_jacobian.py).
// Heatmap of J, vᵀJ computed two ways by the kernel, gradient accumulation controls.
import "./jacobian.css";
import { axesOf } from "./jacobian_axes.js";
import { formatValue } from "./format.js";
import { mountHeatmap } from "./heatmap.js";
import { makeTooltip } from "./tooltip.js";
import { mountVector } from "./vector_controls.js";
import { el } from "./dom.js";
import { float32 } from "./wire.js";
import { watchTheme } from "./root_styles.js";

/** Values shown as numbers (not only colors) when J has at most this many columns. */
const MAX_NUMBERS = 12;

const shapeText = (shape) => `(${shape.join(", ")}${shape.length === 1 ? "," : ""})`;

/** Index of the single 1 in v when v is one-hot, else null. */
function oneHotIndex(v) {
  let idx = null;
  for (let i = 0; i < v.length; i++) {
    if (v[i] === 0) continue;
    if (v[i] !== 1 || idx !== null) return null;
    idx = i;
  }
  return idx;
}

/** Header line: what J is and how it was computed. */
function mountHeader({ model, root, axes }) {
  const head = el("div", "gw-jac-header", root);
  const title = model.get("title");
  if (title) el("div", "gw-jac-title", head, title);
  const method = model.get("method") === "jacrev" ? "torch.func.jacrev" : "torch.autograd.functional.jacobian";
  const y = model.get("out_name");
  const names = axes.groups.map((g) => g.name);
  const wrt = names.length === 1 ? names[0] : `(${names.join(", ")})`;
  const ins = axes.groups.map((g) => `${g.name} ${shapeText(g.shape)}`).join(", ");
  el(
    "div",
    "gw-jac-summary",
    head,
    `J = ∂${y}/∂${wrt}: ${axes.m} × ${axes.n} · ${y} ${shapeText(model.get("out_shape"))} ← ${ins}` +
      ` · computed with ${method}`,
  );
  const note = model.get("note");
  if (note) el("div", "gw-jac-note", head, note);
}

/** The kernel's vᵀJ results: colored strips, numbers, agreement and x.grad status. */
function mountResults({ model, root, heat, axes, listen }) {
  const strips = {
    matmul: heat.strip("vᵀJ = v @ J", "gw-jac-strip-matmul"),
    backward: heat.strip("y.backward(v)", "gw-jac-strip-backward"),
    grad: heat.strip("x.grad", "gw-jac-strip-grad"),
  };
  const out = el("div", "gw-jac-results", root);
  const agree = el("div", "gw-jac-agree", out);
  const numbers = el("div", "gw-jac-values", out);
  const status = el("div", "gw-jac-grad-status", out);

  const update = () => {
    const view = model.get("vjp_view");
    if (!view || !view.matmul) return;
    const arrays = {
      matmul: float32(view.matmul),
      backward: float32(view.backward),
      grad: float32(view.grad),
    };
    let vmax = 0;
    for (const key of ["matmul", "backward"]) for (const x of arrays[key]) vmax = Math.max(vmax, Math.abs(x));
    for (const x of arrays.grad) vmax = Math.max(vmax, Math.abs(x));
    for (const key of Object.keys(strips)) strips[key].update(arrays[key], vmax);

    agree.classList.toggle("gw-jac-bad", !view.agree);
    agree.textContent = view.agree
      ? `✓ v @ J and y.backward(v) agree (max |difference| = ${formatValue(view.max_diff)})`
      : `✗ v @ J and y.backward(v) differ by up to ${formatValue(view.max_diff)}`;

    numbers.replaceChildren();
    if (axes.cb === 1 && axes.n <= MAX_NUMBERS) {
      const rows = [
        ["v @ J", "matmul"],
        ["y.backward(v)", "backward"],
        ["x.grad", "grad"],
      ];
      for (const [label, key] of rows) {
        const line = el("div", `gw-jac-values-row gw-jac-values-${key}`, numbers);
        el("div", "gw-jac-values-label", line, label);
        el("div", "gw-jac-values-data", line, `[${Array.from(arrays[key], formatValue).join(", ")}]`);
      }
    }

    const calls = view.calls;
    const ratio = view.ratio;
    if (calls === 0) {
      status.textContent = "x.grad is None (zeroed): press backward(v) to fill it.";
    } else if (ratio !== null && calls === 1 && Math.abs(ratio - 1) < 1e-3) {
      status.textContent = "x.grad = vᵀJ (one backward call since zero_grad).";
    } else if (ratio !== null) {
      status.textContent =
        `x.grad = ${formatValue(ratio)} × vᵀJ after ${calls} backward calls without zero_grad: ` +
        "gradients accumulate (add up) until you zero them.";
    } else {
      status.textContent =
        `x.grad is the sum of ${calls} backward calls (with different v) since zero_grad: ` +
        "gradients accumulate.";
    }
  };
  listen("change:vjp_view", update);
  update();
}

/** Accumulation toggle and the backward / zero_grad buttons. */
function mountAccumulation({ model, root, listen }) {
  const box = el("div", "gw-jac-acc", root);
  const label = el("label", "gw-jac-acc-toggle", box);
  const check = el("input", { type: "checkbox", class: "gw-jac-accumulate" });
  label.append(check, " accumulate: each change of v calls backward twice, without zero_grad");
  check.addEventListener("change", () => {
    model.set("accumulate", check.checked);
    model.save_changes();
  });
  const sync = () => {
    check.checked = model.get("accumulate");
  };
  listen("change:accumulate", sync);
  sync();
  for (const [text, event] of [
    ["backward(v)", "backward"],
    ["zero_grad", "zero_grad"],
  ]) {
    const b = el("button", { type: "button", class: `gw-jac-button gw-jac-${event}` }, box, text);
    b.addEventListener("click", () => model.send({ event }));
  }
}

export default {
  render({ model, el: host }) {
    const t0 = performance.now();
    const root = el("div", "gradwidget gw-jacobian", host);
    // Every model listener of this view, removed when the view goes (re-display, close).
    // The stylesheet is the widget's _css, which the host puts in the view's root itself.
    const unlisten = [watchTheme(root)];
    const listen = (event, fn) => {
      model.on(event, fn);
      unlisten.push(() => model.off(event, fn));
    };
    const axes = axesOf(model);
    const tooltip = makeTooltip(root, "gw-jac-tip");
    mountHeader({ model, root, axes });
    const shape = shapeText(model.get("out_shape"));
    const plot = el("div", "gw-jac-plot", root);
    let editor = null;
    const heat = mountHeatmap({
      el: plot,
      axes,
      values: float32(model.get("heat")),
      vmax: model.get("vmax"),
      reduce: model.get("reduce"),
      outLabel: `${model.get("out_name")} ${shape}`,
      tooltip,
      onPickRow: (row) => editor && editor.oneHot(row),
    });
    mountResults({ model, root, heat, axes, listen });
    editor = mountVector({ model, el: root, axes, listen });
    mountAccumulation({ model, root, listen });
    const markRow = () => heat.selectRow(oneHotIndex(model.get("v")));
    listen("change:v", markRow);
    markRow();
    root.dataset.ready = "1";
    root.dataset.renderMs = (performance.now() - t0).toFixed(1);
    return () => {
      for (const off of unlisten) off();
    };
  },
};
