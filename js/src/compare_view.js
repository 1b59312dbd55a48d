// Two runs' gradients on one graph: pick run a and run b in the header, and each node is
// filled by log10(‖grad‖ in a / ‖grad‖ in b) at a step both runs sampled (the kernel's
// w.compare(), via the `compare_runs` / `grad_compare` traits) on a diverging scale: blue
// where a's gradient is smaller, white where equal, red where larger. Restyle only.
import { el } from "./dom.js";
import { formatStat } from "./format.js";

/** Diverging stops, a smaller -> equal -> a larger (ColorBrewer RdBu, reversed). */
const STOPS = ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b"].map((h) =>
  [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)),
);

/**
 * The diverging color of t in [-1, 1].
 * @param {number} t
 * @returns {{css: string, dark: boolean}}
 */
export function diverging(t) {
  const x = ((Math.max(-1, Math.min(1, Number.isFinite(t) ? t : 0)) + 1) / 2) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const c = [0, 1, 2].map((k) => Math.round(STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f));
  const luma = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  return { css: `rgb(${c.join(",")})`, dark: luma < 110 };
}

/** CSS gradient of the diverging scale, left (a smaller) to right (a larger). */
export function divergingCss() {
  return `linear-gradient(to right, ${STOPS.map((c, i) => `rgb(${c.join(",")}) ${(i / (STOPS.length - 1)) * 100}%`).join(", ")})`;
}

/**
 * Styles for ctx.setNodeStyles from node id -> log10 ratio; the scale spans ±(largest |r|),
 * at least ±0.1 (a tenth of a decade).
 * @param {Record<string, number>} ratios
 * @returns {{styles: Map<string, any>, span: number}}
 */
export function compareStyles(ratios) {
  let span = 0.1;
  for (const r of Object.values(ratios)) if (Number.isFinite(r)) span = Math.max(span, Math.abs(r));
  const styles = new Map();
  for (const [id, r] of Object.entries(ratios)) {
    if (!Number.isFinite(r)) continue;
    const c = diverging(r / span);
    // A collapsed box shows its member farthest from equal.
    styles.set(id, { fill: c.css, cls: c.dark ? "gw-compare gw-dark" : "gw-compare", value: Math.abs(r) });
  }
  return { styles, span };
}

/**
 * Mount the run pickers and the comparison coloring.
 * @param {{model: any, ctx: any}} args
 * @returns {() => void} cleanup
 */
export function mountCompare({ model, ctx }) {
  const box = el("span", "gw-compare-pick");
  box.hidden = true;
  box.title = "Color the graph by the ratio of two runs' gradient norms at the same step";
  el("span", "gw-compare-label", box, "compare");
  const pickA = el("select", "gw-compare-a", box);
  el("span", "", box, "÷");
  const pickB = el("select", "gw-compare-b", box);
  const legend = el("span", "gw-compare-legend", box);
  const lo = el("span", "", legend);
  el("span", "gw-legend-bar", legend).style.background = divergingCss();
  const hi = el("span", "", legend);
  const note = el("span", "gw-compare-note", box);
  ctx.panels.toolbar.appendChild(box);

  const fill = () => {
    const runs = (model.get("run_info") || []).filter((r) => r && Number.isInteger(r.id));
    box.hidden = runs.length < 2;
    const [a, b] = model.get("compare_runs") || [];
    for (const [pick, cur] of [[pickA, a], [pickB, b]]) {
      const opts = [["", "—"], ...runs.map((r) => [String(r.id), `run ${r.id} · lr ${formatStat(r.lr)}`])];
      pick.replaceChildren(
        ...opts.map(([v, t]) => {
          const o = el("option", "", undefined, t);
          o.value = v;
          return o;
        }),
      );
      pick.value = cur === undefined ? "" : String(cur);
    }
  };
  const onPick = () => {
    const a = pickA.value;
    const b = pickB.value;
    model.set("compare_runs", a && b && a !== b ? [Number(a), Number(b)] : []);
    model.save_changes();
  };
  pickA.addEventListener("change", onPick);
  pickB.addEventListener("change", onPick);

  const render = () => {
    const cmp = model.get("grad_compare") || {};
    const ratios = cmp.ratios || null;
    legend.hidden = !ratios;
    note.textContent = cmp.error ? cmp.error : ratios ? `at step ${cmp.step}` : "";
    note.classList.toggle("gw-compare-error", Boolean(cmp.error));
    if (!ratios) {
      ctx.setNodeStyles(new Map(), "compare");
      box.dataset.colored = "0";
      return;
    }
    const { styles, span } = compareStyles(ratios);
    lo.textContent = `×${formatStat(10 ** -span)}`;
    hi.textContent = `×${formatStat(10 ** span)}`;
    legend.title =
      `Node fill: ‖grad‖ in run ${cmp.runs[0]} over run ${cmp.runs[1]} at step ${cmp.step}, log scale: ` +
      "blue smaller, white equal, red larger.";
    ctx.setNodeStyles(styles, "compare");
    box.dataset.colored = String(styles.size);
  };
  const listeners = [
    ["change:run_info", fill],
    ["change:compare_runs", fill],
    ["change:grad_compare", render],
  ];
  for (const [e, fn] of listeners) model.on(e, fn);
  fill();
  if ((model.get("grad_compare") || {}).ratios) render();
  return () => {
    for (const [e, fn] of listeners) model.off(e, fn);
    box.remove();
  };
}
