// Bundles the front-end into ../gradwidget/static/.
// The Graphviz WASM module is NOT bundled into the widget: it is shipped once per
// page as gzipped bytes by the loader widget (see gradwidget/_loader.py).
import * as esbuild from "esbuild";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const out = new URL("../gradwidget/static/", import.meta.url).pathname;
mkdirSync(out, { recursive: true });

const require = createRequire(import.meta.url);
// The package exports only its entry; resolve it and take dist/viz.js (self-contained ESM).
const vizPath = join(dirname(require.resolve("@viz-js/viz")), "viz.js");
writeFileSync(join(out, "viz.mjs.gz"), gzipSync(readFileSync(vizPath), { level: 9 }));

const options = {
  // widget.js (+ widget.css) is the graph front-end; it reaches the browser once per page
  // through the loader widget. stub.js is the graph widget's per-instance `_esm`.
  entryPoints: {
    widget: "src/widget.js",
    stub: "src/stub.js",
    loader: "src/loader.js",
    jacobian: "src/jacobian.js",
  },
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: !process.argv.includes("--watch"),
  outdir: out,
  loader: { ".css": "css" },
  logLevel: "info",
};

if (process.argv.includes("--watch")) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
