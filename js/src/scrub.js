// The step slider under the graph: replays the last samples on the fixed layout. Each stats
// update the page receives is kept as one compact frame (every node's statistics as of that
// sample, float32 columns); moving the slider pins the store to a frame, so the colors, the
// detail panel and the gradient flow show that sample (restyle only, never a re-layout);
// "live" (or the slider's right end) snaps back. The kernel keeps its own copy (w.history).
import { el } from "./dom.js";

/** Frames kept when the kernel did not say (its `history`, in `grad_watch`). */
export const DEFAULT_FRAMES = 200;

/**
 * A ring of compact snapshots of the store's statistics.
 */
export class Frames {
  /** @param {string[]} columns the statistic columns kept (the wire's STAT_COLUMNS) */
  constructor(columns, size = DEFAULT_FRAMES) {
    this.columns = columns;
    this.size = size;
    /** @type {{sample: number, time: number, rows: Int32Array, data: Float32Array}[]} */
    this.list = [];
  }

  /**
   * Keep the statistics of every node as of this sample.
   * @param {number} sample the update's sample number
   * @param {Map<number, any>} latest statistics by node row
   */
  push(sample, latest) {
    const cols = this.columns;
    const rows = Int32Array.from(latest.keys());
    const data = new Float32Array(rows.length * cols.length);
    let k = 0;
    for (const s of latest.values()) for (const c of cols) data[k++] = typeof s[c] === "number" ? s[c] : NaN;
    this.list.push({ sample, time: Date.now(), rows, data });
    while (this.list.length > this.size) this.list.shift();
  }

  /** Bytes of the kept snapshots. */
  get bytes() {
    return this.list.reduce((n, f) => n + f.rows.byteLength + f.data.byteLength, 0);
  }

  /**
   * The statistics of frame `i` by node row, shaped like the store's (no histograms or
   * values: the detail panel shows what it has).
   * @param {number} i
   * @returns {{sample: number, time: number, latest: Map<number, any>}|null}
   */
  at(i) {
    const f = this.list[i];
    if (!f) return null;
    const cols = this.columns;
    const latest = new Map();
    for (let r = 0; r < f.rows.length; r++) {
      const s = { row: f.rows[r], hist: null, histLo: NaN, histHi: NaN, values: null, data: null };
      const measured = {};
      for (let c = 0; c < cols.length; c++) {
        const v = f.data[r * cols.length + c];
        s[cols[c]] = v;
        if (!Number.isNaN(v)) measured[cols[c]] = f.sample;
      }
      s.measured = measured;
      latest.set(f.rows[r], s);
    }
    return { sample: f.sample, time: f.time, latest };
  }
}

/**
 * Mount the slider (first in the bottom panel, right under the graph).
 * @param {{model: any, ctx: any, store: import("./live.js").GradStore, restyle: () => void}} args
 * @returns {() => void} cleanup
 */
export function mountScrub({ model, ctx, store, restyle }) {
  const box = el("div", "gw-scrub");
  box.hidden = true;
  ctx.panels.bottom.prepend(box);
  el("span", "gw-scrub-label", box, "step");
  const slider = el("input", "gw-scrub-range", box);
  slider.type = "range";
  slider.min = "0";
  slider.step = "1";
  slider.title = "Replay the last samples on this layout (restyle only); ← → step through them";
  const label = el("span", "gw-scrub-at", box);
  const live = el("button", "gw-scrub-live", box, "live");
  live.title = "Back to the latest sample";

  const render = () => {
    const n = store.frames.list.length;
    box.hidden = n < 2;
    slider.max = String(Math.max(0, n - 1));
    const pinned = store.pinned;
    const i = pinned ? store.frames.list.findIndex((f) => f.sample === pinned.sample) : n - 1;
    slider.value = String(Math.max(0, i));
    live.disabled = !pinned;
    box.classList.toggle("gw-scrubbing", Boolean(pinned));
    box.dataset.frames = String(n);
    box.dataset.pinned = pinned ? String(pinned.sample) : "";
    const at = pinned || store.frames.list[n - 1];
    label.textContent = at
      ? `sample ${at.sample}${pinned ? ` · ${Math.round((Date.now() - at.time) / 1000)} s ago` : " · live"}`
      : "";
  };
  const onInput = () => {
    const t0 = performance.now();
    const i = Number(slider.value);
    const n = store.frames.list.length;
    store.pin(i >= n - 1 ? null : store.frames.at(i));
    restyle();
    render();
    box.dataset.scrubMs = (performance.now() - t0).toFixed(2);
  };
  slider.addEventListener("input", onInput);
  live.addEventListener("click", () => {
    store.pin(null);
    restyle();
    render();
  });
  const off = store.subscribe(render);
  const onWatch = () => {
    const size = (model.get("grad_watch") || {}).history;
    if (Number.isInteger(size) && size > 0) store.frames.size = size;
  };
  model.on("change:grad_watch", onWatch);
  onWatch();
  return () => {
    off();
    model.off("change:grad_watch", onWatch);
    box.remove();
  };
}
