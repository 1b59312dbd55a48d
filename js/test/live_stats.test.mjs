// The live views' pure helpers (js/src/live_stats.js): an update whose statistics are NaN
// (not computed this sample) keeps the node's last measured values, an all-NaN histogram
// keeps the last histogram, and the watch-status line from grad_watch.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  decades,
  formatHz,
  histRange,
  isUnsampledHist,
  mergeStats,
  staleness,
  watchStatus,
} from "../src/live_stats.js";

const BINS = 32;
const hist = (start) => Float32Array.from({ length: BINS }, (_, k) => start + k);
const nanHist = () => new Float32Array(BINS).fill(NaN);

/** A decoded update row as wire.js decodeStats makes it. */
function row(extra = {}) {
  return {
    row: 3,
    norm: 1.5,
    mean: -0.25,
    std: 0.1,
    min: -1.5,
    max: 2,
    absmean: 0.75,
    nonfinite: 0,
    numel: 16,
    update_ratio: NaN,
    hist: hist(0),
    values: null,
    data: null,
    ...extra,
  };
}

/** An intermediate at the default level: norm and nonfinite only. */
const normOnly = (norm) =>
  row({ norm, mean: NaN, std: NaN, min: NaN, max: NaN, absmean: NaN, hist: nanHist() });

test("a first update keeps what it measured and copies its arrays", () => {
  const src = row({ values: Float32Array.of(1, 2), update_ratio: 1e-3 });
  const s = mergeStats(undefined, src, 7);
  assert.equal(s.norm, 1.5);
  assert.equal(s.update_ratio, 1e-3);
  assert.deepEqual(Array.from(s.hist), Array.from(hist(0)));
  assert.notEqual(s.hist, src.hist, "the update's buffer is not kept alive");
  assert.notEqual(s.values, src.values);
  assert.deepEqual([s.histLo, s.histHi], [-1.5, 2]);
  assert.equal(s.measured.mean, 7);
  assert.equal(s.measured.hist, 7);
});

test("NaN columns keep the last measured values, with the sample that measured them", () => {
  const first = mergeStats(undefined, row(), 1);
  const s = mergeStats(first, normOnly(4), 2);
  assert.equal(s.norm, 4);
  assert.equal(s.measured.norm, 2);
  for (const c of ["mean", "std", "min", "max", "absmean"]) {
    assert.equal(s[c], first[c], c);
    assert.equal(s.measured[c], 1, c);
  }
  assert.deepEqual(Array.from(s.hist), Array.from(hist(0)));
  assert.equal(s.measured.hist, 1);
  assert.deepEqual([s.histLo, s.histHi], [-1.5, 2]);
  // A later full sample replaces them all.
  const t = mergeStats(s, row({ mean: 0.5, hist: hist(10), min: -3, max: 3 }), 3);
  assert.equal(t.mean, 0.5);
  assert.equal(t.measured.mean, 3);
  assert.equal(t.hist[0], 10);
  assert.deepEqual([t.histLo, t.histHi], [-3, 3]);
});

test("never measured stays NaN, and an all-NaN histogram is no histogram", () => {
  const s = mergeStats(undefined, normOnly(2), 5);
  for (const c of ["mean", "std", "min", "max", "absmean", "update_ratio"]) {
    assert.ok(Number.isNaN(s[c]), c);
    assert.equal(s.measured[c], undefined, c);
  }
  assert.equal(s.hist, null);
  assert.equal(s.measured.hist, undefined);
  assert.equal(histRange(s.histLo, s.histHi), null);
  const again = mergeStats(s, normOnly(3), 6);
  assert.equal(again.hist, null);
  assert.ok(Number.isNaN(again.mean));
});

test("a parameter's moments every sample, its histogram only sometimes: the histogram keeps its own range", () => {
  const a = mergeStats(undefined, row({ min: -1, max: 1, hist: hist(1), update_ratio: 2e-3 }), 1);
  const b = mergeStats(a, row({ min: -5, max: 5, hist: nanHist(), update_ratio: NaN }), 2);
  assert.deepEqual([b.min, b.max], [-5, 5]);
  assert.deepEqual([b.histLo, b.histHi], [-1, 1], "the bins span the sample that made them");
  assert.equal(b.hist[0], 1);
  assert.equal(b.update_ratio, 2e-3, "the last measured ratio is kept");
  assert.equal(b.measured.update_ratio, 1);
});

test("any statistic column the kernel adds is kept the same way; counts are always the update's", () => {
  const a = mergeStats(undefined, row({ extra: 2, nonfinite: 3 }), 1);
  const b = mergeStats(a, row({ extra: NaN, nonfinite: 0, numel: 16 }), 2);
  assert.equal(b.extra, 2);
  assert.equal(b.measured.extra, 1);
  assert.equal(b.nonfinite, 0);
  assert.equal(b.row, 3);
});

test("infinity is a measured value; only NaN means not computed", () => {
  const a = mergeStats(undefined, row(), 1);
  const b = mergeStats(a, row({ max: Infinity, norm: Infinity }), 2);
  assert.equal(b.max, Infinity);
  assert.equal(b.norm, Infinity);
  assert.equal(b.measured.max, 2);
});

test("a histogram with some NaN bins is sampled; its NaN bins count as empty", () => {
  const h = hist(1);
  h[4] = NaN;
  assert.equal(isUnsampledHist(h), false);
  assert.equal(isUnsampledHist(nanHist()), true);
  assert.equal(isUnsampledHist(null), true);
  assert.equal(isUnsampledHist(new Float32Array(0)), true);
  const s = mergeStats(undefined, row({ hist: h }), 1);
  assert.equal(s.hist[4], 0);
});

test("histRange and staleness", () => {
  assert.deepEqual(histRange(-1, 2), [-1, 2]);
  assert.deepEqual(histRange(3, 3), [2, 4]);
  assert.equal(histRange(NaN, 1), null);
  assert.equal(histRange(0, Infinity), null);
  assert.equal(staleness(undefined, 5), null);
  assert.equal(staleness(5, 5), "");
  assert.equal(staleness(4, 5), "1 sample ago");
  assert.equal(staleness(2, 5), "3 samples ago");
});

test("formatHz", () => {
  assert.equal(formatHz(4.96), "5 Hz");
  assert.equal(formatHz(1.04), "1 Hz");
  assert.equal(formatHz(0.43), "0.43 Hz");
  assert.equal(formatHz(12.3), "12 Hz");
  assert.equal(formatHz(0.05), "0.05 Hz");
  for (const v of [0, -1, NaN, Infinity]) assert.equal(formatHz(v), "0 Hz");
});

test("watchStatus: both tiers' rates, a silent tier left out", () => {
  const base = { watching: true, leaf_hz: 4.9, op_hz: 1.1, leaf_samples: 20, op_samples: 5, notes: [] };
  assert.equal(watchStatus(base).rates, "grads 4.9 Hz · intermediates 1.1 Hz");
  assert.equal(watchStatus({ ...base, op_hz: 0, op_samples: 0 }).rates, "grads 4.9 Hz");
  // Sampled before, nothing in the last 5 s: an honest 0 Hz.
  assert.equal(watchStatus({ ...base, op_hz: 0 }).rates, "grads 4.9 Hz · intermediates 0 Hz");
  assert.deepEqual(watchStatus(base).notes, []);
  assert.equal(watchStatus({ watching: true, leaf_hz: 0, op_hz: 0, leaf_samples: 0, op_samples: 0 }), null);
  assert.equal(watchStatus({}), null);
  assert.equal(watchStatus(null), null);
  assert.equal(watchStatus(base).watching, true);
  assert.equal(watchStatus({ ...base, watching: false }).watching, false);
});

test("watchStatus: GradScaler's skipped steps, rank-local intermediates and the notes", () => {
  const st = watchStatus({
    leaf_hz: 5,
    leaf_samples: 3,
    skipped_steps: 2,
    scale: 65536,
    overhead: 0.012,
    local_intermediates: true,
    notes: ["compiled: per-op gradients not available", "", 7],
  });
  assert.deepEqual(
    st.notes.map((n) => n.text),
    ["2 steps skipped by GradScaler", "intermediates: this rank's gradient", "compiled: per-op gradients not available"],
  );
  assert.equal(st.notes[0].kind, "warn");
  assert.match(st.title, /GradScaler scale: 6\.55e\+4/);
  assert.match(st.title, /overhead: 1\.2 %/);
  assert.equal(watchStatus({ skipped_steps: 1 }).notes[0].text, "1 step skipped by GradScaler");
  assert.equal(watchStatus({ skipped_steps: 1 }).rates, "");
  assert.equal(watchStatus({ leaf_hz: 5, leaf_samples: 1, skipped_steps: 0, local_intermediates: false }).notes.length, 0);
});

test("decades: the ratio axis covers the finite positive ratios and the 1e-3 guide", () => {
  assert.deepEqual(decades([]), [-4, -2]);
  assert.deepEqual(decades([NaN, 0, -1, Infinity]), [-4, -2]);
  assert.deepEqual(decades([2e-5, 3e-2]), [-5, -1]);
  assert.deepEqual(decades([5e-3]), [-4, -1]);
  assert.deepEqual(decades([1e-7, 1]), [-7, 0]);
});
