// Pure helpers of the graph's debugging views: the NaN origin's path on the drawn units
// (origin_view.js) and a collapsed module box's gradient aggregates (module_badges.js).
import { test } from "node:test";
import assert from "node:assert/strict";

import { pathEdges, pathUnits } from "../src/origin_view.js";
import { badgeText, boxAggregates } from "../src/module_badges.js";

test("a path's units merge the members of a collapsed box; edges run forward", () => {
  const unit = { out: "n9", add: "n8", a: "m0", b: "m0", leaf: "m0" };
  const units = pathUnits(["out", "add", "a", "b", "leaf", "gone"], (id) => unit[id]);
  assert.deepEqual(units, ["n9", "n8", "m0"]);
  assert.deepEqual([...pathEdges(units)], ["n8->n9", "m0->n8"]);
});

test("box aggregates: max/mean over members with a sample, counts over parameters", () => {
  const table = { id: ["w", "b", "g", "op", "out"], kind: ["leaf", "leaf", "leaf", "op", "output"] };
  const unit = { w: "m0", b: "m0", g: "m0", op: "m0", out: "n4" };
  const latest = new Map([
    [0, { norm: 2, nonfinite: 0, update_ratio: 1e-3 }],
    [1, { norm: 0, nonfinite: 0, update_ratio: NaN }],
    [3, { norm: 4, nonfinite: 0, update_ratio: NaN }],
    [4, { norm: 9, nonfinite: 0 }],
  ]);
  const m0 = boxAggregates(latest, table, (id) => unit[id]).get("m0");
  assert.equal(m0.maxNorm, 4);
  assert.equal(m0.meanNorm, 2);
  assert.equal(m0.nodes, 3);
  assert.equal(m0.params, 3); // "g" has no sample yet: still a parameter of the box
  assert.equal(m0.zero, 1);
  assert.equal(m0.nonfinite, 0);
  assert.equal(m0.maxRatio, 1e-3);
  assert.equal(badgeText(m0), "1 zero");
  latest.set(2, { norm: 1, nonfinite: 3 });
  const again = boxAggregates(latest, table, (id) => unit[id]).get("m0");
  assert.equal(badgeText(again), "1 NaN · 1 zero");
  assert.equal(badgeText(undefined), "");
});

import { consumers, findRows, step } from "../src/graph_find.js";

test("search: a substring of the kernel's haystacks, trimmed and lowercased, forward order", () => {
  const hay = ["0.weight\n0.weight\n(8, 4)\n0\nlinear", "tanh\n1\ntanhbackward0", "", "attn.q\nmm"];
  assert.deepEqual(findRows(hay, " TANH "), [1]);
  assert.deepEqual(findRows(hay, "(8, 4)"), [0]);
  assert.deepEqual(findRows(hay, "n"), [0, 1, 3]);
  assert.deepEqual(findRows(hay, "  "), []);
});

test("keyboard steps: up to an input, down to a consumer, left/right among the others", () => {
  // 0 -> 2, 1 -> 2, 2 -> 3, 2 -> 4
  const inputs = [[], [], [0, 1], [2], [2]];
  const outs = consumers(inputs);
  assert.deepEqual(outs, [[2], [2], [3, 4], [], []]);
  const up = step({ row: 2, key: "ArrowUp", inputs, outs, alts: null });
  assert.deepEqual(up, { row: 0, alts: { list: [0, 1], i: 0 } });
  assert.equal(step({ row: 0, key: "ArrowRight", inputs, outs, alts: up.alts }).row, 1);
  assert.equal(step({ row: 0, key: "ArrowLeft", inputs, outs, alts: up.alts }).row, 1);
  assert.equal(step({ row: 2, key: "ArrowDown", inputs, outs, alts: null }).row, 3);
  assert.equal(step({ row: 3, key: "ArrowDown", inputs, outs, alts: null }), null);
  assert.equal(step({ row: 3, key: "ArrowLeft", inputs, outs, alts: null }), null);
});

import { Frames } from "../src/scrub.js";

test("frames: bounded, each a snapshot of every node as of its sample", () => {
  const frames = new Frames(["norm", "nonfinite", "update_ratio"], 3);
  const latest = new Map();
  for (let k = 1; k <= 5; k++) {
    latest.set(0, { norm: k, nonfinite: 0, update_ratio: NaN });
    if (k === 2) latest.set(7, { norm: 0.5, nonfinite: 1, update_ratio: 1e-3 });
    frames.push(k, latest);
  }
  assert.deepEqual(frames.list.map((f) => f.sample), [3, 4, 5]);
  assert.equal(frames.bytes, 3 * (2 * 4 + 2 * 3 * 4));
  const f = frames.at(0);
  assert.equal(f.sample, 3);
  assert.equal(f.latest.get(0).norm, 3);
  assert.equal(f.latest.get(7).nonfinite, 1);
  assert.ok(Math.abs(f.latest.get(7).update_ratio - 1e-3) < 1e-9);
  assert.deepEqual(f.latest.get(0).measured, { norm: 3, nonfinite: 3 }); // NaN: not measured
  assert.equal(frames.at(9), null);
});

import { compareStyles, diverging } from "../src/compare_view.js";

test("comparison colors: diverging around equal, scaled to the largest ratio", () => {
  assert.equal(diverging(0).css, "rgb(247,247,247)");
  assert.equal(diverging(-1).css, "rgb(33,102,172)");
  assert.equal(diverging(1).css, "rgb(178,24,43)");
  assert.equal(diverging(5).css, diverging(1).css);
  const { styles, span } = compareStyles({ a: 2, b: -1, c: 0, d: NaN });
  assert.equal(span, 2);
  assert.equal(styles.get("a").fill, diverging(1).css);
  assert.equal(styles.get("b").fill, diverging(-0.5).css);
  assert.equal(styles.get("c").value, 0);
  assert.ok(!styles.has("d"));
  assert.equal(compareStyles({ a: 0.01 }).span, 0.1); // tiny differences stay pale
});
