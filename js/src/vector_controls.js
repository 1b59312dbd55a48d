// Editing v (the vector in vᵀJ): presets, one slider + number box per output, free text.
import { el } from "./dom.js";
import { formatValue } from "./format.js";

const SLIDER_LIMIT = 2;
const SAVE_EVERY_MS = 60;
const TEXT_LIMIT = 200;

function button(parent, text, cls, onClick) {
  const b = el("button", `gw-jac-button ${cls}`, parent, text);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

/**
 * Send v to the kernel, at most every SAVE_EVERY_MS while a slider is dragged
 * (the last value always goes out).
 * @param {any} model
 */
function makeSaver(model) {
  let timer = null;
  let last = 0;
  const flush = () => {
    timer = null;
    last = Date.now();
    model.save_changes();
  };
  return (v) => {
    model.set("v", v);
    if (timer) return;
    const wait = Math.max(0, SAVE_EVERY_MS - (Date.now() - last));
    timer = setTimeout(flush, wait);
  };
}

/**
 * Mount the v editor.
 * @param {object} opts
 * @param {any} opts.model
 * @param {HTMLElement} opts.el
 * @param {import("./jacobian_axes.js").Axes} opts.axes
 * @param {(event: string, fn: Function) => void} opts.listen model.on, undone with the view
 * @returns {{setV: (v: number[]) => void, oneHot: (i: number) => void}}
 */
export function mountVector({ model, el: parent, axes, listen }) {
  const { m } = axes;
  const box = el("div", "gw-jac-v", parent);
  const head = el("div", "gw-jac-v-head", box);
  el("span", "gw-jac-v-title", head, `v (${m} value${m === 1 ? "" : "s"}, one per output):`);
  const save = makeSaver(model);
  const error = el("div", "gw-jac-v-error", box);

  const setV = (v) => {
    error.textContent = "";
    save(v);
    sync(v);
  };
  const oneHot = (i) => {
    const v = new Array(m).fill(0);
    v[Math.max(0, Math.min(m - 1, i))] = 1;
    setV(v);
  };

  button(head, "all ones", "gw-jac-preset-ones", () => setV(new Array(m).fill(1)));
  button(head, "zeros", "gw-jac-preset-zeros", () => setV(new Array(m).fill(0)));
  const hotIndex = el("input", "gw-jac-onehot-index", head);
  hotIndex.type = "number";
  hotIndex.min = "0";
  hotIndex.max = String(m - 1);
  hotIndex.value = "0";
  hotIndex.title = "output index i for the one-hot v (or click a heatmap row)";
  button(head, "one-hot row", "gw-jac-preset-onehot", () => oneHot(Number(hotIndex.value) || 0));

  // Sliders for small m.
  const sliders = [];
  if (m <= model.get("max_sliders")) {
    const list = el("div", "gw-jac-sliders", box);
    for (let i = 0; i < m; i++) {
      const row = el("label", "gw-jac-slider-row", list);
      el("span", "gw-jac-slider-label", row, axes.rowLabel(i));
      const index = { index: String(i) };
      const range = el("input", { class: "gw-jac-slider", type: "range", step: "0.01", dataset: index }, row);
      const num = el("input", { class: "gw-jac-num", type: "number", step: "any", dataset: index }, row);
      const current = () => model.get("v").slice();
      range.addEventListener("input", () => {
        const v = current();
        v[i] = Number(range.value);
        num.value = String(v[i]);
        setV(v);
      });
      num.addEventListener("change", () => {
        const x = Number(num.value);
        if (num.value.trim() === "" || !Number.isFinite(x)) {
          error.textContent = `v[${i}] must be a finite number`;
          return;
        }
        const v = current();
        v[i] = x;
        setV(v);
      });
      sliders.push({ range, num });
    }
  }

  // Free text for any m: comma- or space-separated values.
  const textRow = el("div", "gw-jac-v-text-row", box);
  const text = el("input", "gw-jac-v-text", textRow);
  text.type = "text";
  text.placeholder = `${m} numbers, comma- or space-separated`;
  text.spellcheck = false;
  button(textRow, "set v", "gw-jac-v-apply", () => {
    const parts = text.value.split(/[\s,;]+/).filter((s) => s.length);
    const v = parts.map(Number);
    if (v.length !== m) {
      error.textContent = `v needs ${m} values, got ${v.length}`;
      return;
    }
    if (!v.every(Number.isFinite)) {
      error.textContent = "v has entries that are not finite numbers";
      return;
    }
    setV(v);
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter") textRow.querySelector(".gw-jac-v-apply").click();
  });

  function sync(v) {
    sliders.forEach(({ range, num }, i) => {
      const lim = Math.max(SLIDER_LIMIT, Math.ceil(Math.abs(v[i])));
      range.min = String(-lim);
      range.max = String(lim);
      if (document.activeElement !== range) range.value = String(v[i]);
      if (document.activeElement !== num) num.value = String(v[i]);
    });
    if (document.activeElement !== text) {
      text.value = m <= TEXT_LIMIT ? v.map(formatValue).join(", ") : "";
    }
  }
  listen("change:v", () => sync(model.get("v")));
  sync(model.get("v"));
  return { setV, oneHot };
}
