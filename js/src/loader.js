// The loader widget: one hidden widget per kernel carrying gzipped WASM Graphviz and the
// graph front-end; graph widgets reach its exports (`viz`, `frontend`, `layoutInWorker`,
// bundle.js) through host.getWidget(). initialize() only wraps the traits: everything is
// decompressed and compiled on first use (anywidget fails a slow initialize).
import { loaderExports } from "./bundle.js";

export default {
  initialize({ model }) {
    return loaderExports((name) => model.get(name));
  },
};
