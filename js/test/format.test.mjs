// The number and byte text every view shows (js/src/format.js): pinned to what the panels,
// plots and tooltips have always printed.
import { test } from "node:test";
import assert from "node:assert/strict";

import * as f from "../src/format.js";

const cases = {
  formatStat: { 0: "0", 1: "1.00", 0.5: "0.500", "-0.0042": "-0.00420", 0.000999: "9.99e-4", 12345.6: "1.23e+4", 123.456: "123" },
  formatAxis: { 0: "0", 1: "1.0", 0.5: "0.50", "-0.0042": "-4.2e-3", 0.01: "0.010", 12345.6: "1.2e+4" },
  formatValue: { 0: "0", 1: "1", 0.123456: "0.1235", "-0.0042": "-0.0042", 0.000025: "2.50e-5", 9999.4: "9999" },
  formatTick: { 0: "0", 1: "1", 0.123456: "0.123", 0.000999: "1.0e-3", 9999.4: "10000", "-2000000": "-2.0e+6" },
  formatLr: { 1: "1", 0.05: "0.05", 0.001: "0.001", 0.000999: "1e-3", 0.00003: "3e-5", 0.000025: "2.5e-5", 10000: "1e+4" },
};

for (const [name, table] of Object.entries(cases)) {
  test(name, () => {
    for (const [v, want] of Object.entries(table)) assert.equal(f[name](Number(v)), want, `${name}(${v})`);
    for (const v of [NaN, Infinity, -Infinity]) assert.equal(f[name](v), String(v));
  });
}

test("formatBytes", () => {
  const want = { 0: "0 B", 1023: "1023 B", 1024: "1.0 KB", 1536: "1.5 KB", 1048576: "1.0 MB", 3e9: "2.8 GB", 2e12: "1862.6 GB" };
  for (const [n, text] of Object.entries(want)) assert.equal(f.formatBytes(Number(n)), text);
});

test("formatDuration", () => {
  assert.equal(f.formatDuration(null), "–");
  assert.equal(f.formatDuration(4.25), "4.3 s");
  assert.equal(f.formatDuration(42.4), "42 s");
  assert.equal(f.formatDuration(185), "3 min 5 s");
});
