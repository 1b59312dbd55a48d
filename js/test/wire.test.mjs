// The browser's stats decoder on the fixed blob that tests/test_stats_wire.py pins
// (made by gradwidget._wire.encode_stats): the same values the Python decoder reads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { setConstants } from "../src/shared.js";
import { decodeStats } from "../src/wire.js";

const data = new URL("../../tests/data/", import.meta.url);
const fixture = JSON.parse(readFileSync(new URL("stats.json", data), "utf8"));
const blob = readFileSync(new URL("stats.bin", data));

/** A decoded value as the fixture spells it: typed arrays as lists, inf as "inf". */
function plain(v) {
  if (v === null) return null;
  if (ArrayBuffer.isView(v)) return Array.from(v, plain);
  if (typeof v === "number" && !Number.isFinite(v)) return Number.isNaN(v) ? "nan" : v > 0 ? "inf" : "-inf";
  return v;
}

/** The blob at an odd offset of a larger buffer, as a DataView (how ipywidgets hands buffers over). */
function unaligned(bytes) {
  const buf = new ArrayBuffer(bytes.length + 3);
  new Uint8Array(buf, 3).set(bytes);
  return new DataView(buf, 3, bytes.length);
}

function check(decoded) {
  assert.equal(decoded.step, fixture.step);
  const rows = decoded.rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, plain(v)])));
  assert.deepEqual(rows, fixture.rows);
}

test("decodeStats reads the fixed blob with the layout the loader sends", () => {
  setConstants({ ...fixture.layout, max_units: 0, big_view: 0, schedule_labels: {} });
  check(decodeStats(unaligned(blob)));
});

test("decodeStats takes an explicit layout and a plain ArrayBuffer", () => {
  const buf = blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.byteLength);
  check(decodeStats(buf, fixture.layout));
});

test("decodeStats: an empty update has no rows; another format is refused", () => {
  assert.deepEqual(decodeStats(new ArrayBuffer(0), fixture.layout), { step: 0, rows: [] });
  const other = new Uint8Array(blob);
  other[3] = "2".charCodeAt(0);
  assert.throws(() => decodeStats(other.buffer, fixture.layout), /not a gradwidget stats update/);
});
