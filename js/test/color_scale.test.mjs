// The live color scale (js/src/live.js): it widens at once to new norms and shrinks slowly;
// a scrubbed frame is drawn on the live scale widened to cover it, which leaves the live
// scale as it was.
import { test } from "node:test";
import assert from "node:assert/strict";

import { cover, relax } from "../src/live.js";

test("relax widens at once and shrinks by a fifth of the gap", () => {
  assert.deepEqual(relax(null, [0, 1]), [0, 1]);
  assert.deepEqual(relax([0, 1], [-1, 2]), [-1, 2]);
  assert.deepEqual(relax([0, 1], [0.5, 0.5]), [0.1, 0.9]);
});

test("cover is the union, and takes either side when the other is missing", () => {
  assert.deepEqual(cover([0, 1], [-2, 0.5]), [-2, 1]);
  assert.deepEqual(cover(null, [1, 2]), [1, 2]);
  assert.deepEqual(cover([1, 2], null), [1, 2]);
  assert.equal(cover(null, null), null);
});
