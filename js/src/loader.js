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

/**
 * Say once, in a graph view that loaded its own copy of this module (stub.js: a host
 * without widget composition), why it is heavier there.
 * @param {HTMLElement} el the view
 * @param {string} why
 * @param {number} bytes what the copy weighed on the wire
 */
export function explainOwnCopy(el, why, bytes) {
  const note = document.createElement("div");
  note.className = "gw-host-note";
  note.textContent =
    `This notebook host cannot share gradwidget's front-end between widgets (${why}), so this ` +
    `widget loaded its own copy of Graphviz and the front-end (${(bytes / 1e6).toFixed(1)} MB). ` +
    "JupyterLab, Notebook 7 and marimo share one copy per page.";
  el.prepend(note);
}
