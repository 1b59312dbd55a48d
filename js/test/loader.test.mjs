// The loader's exports (js/src/bundle.js): creating them reads no payload, so the loader's
// initialize() stays instant (anywidget fails a loader whose initialize() is slow); the
// payload is decompressed when a view first asks. (Importing the decompressed module needs
// blob: URLs, which only browsers load: the browser tests cover that part.)
import { test } from "node:test";
import assert from "node:assert/strict";

import { loaderExports } from "../src/bundle.js";

test("creating the exports reads no payload", () => {
  const read = [];
  const exports = loaderExports((name) => (read.push(name), name.endsWith("_gz") ? null : name));
  assert.deepEqual(read.sort(), ["digest", "frontend_digest"]);
  assert.equal(typeof exports.layoutInWorker, "function");
  assert.deepEqual(read.sort(), ["digest", "frontend_digest"]); // reading a method decodes nothing
});
