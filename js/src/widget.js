// gradwidget front-end entry: composes the header, graph pane and panels.
import "./widget.css";
import { mountGraph } from "./graph_view.js";

/** A tiny event bus the views use to talk to each other without knowing each other. */
function createContext() {
  const handlers = new Map();
  return {
    on(name, fn) {
      if (!handlers.has(name)) handlers.set(name, new Set());
      handlers.get(name).add(fn);
    },
    emit(name, payload) {
      for (const fn of handlers.get(name) || []) fn(payload);
    },
  };
}

function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function mountHeader({ model, el }) {
  const header = document.createElement("div");
  header.className = "gw-header";
  el.appendChild(header);
  const update = () => {
    const n = (model.get("nodes").id || []).length;
    header.textContent = `${n} nodes · saved for backward: ${formatBytes(model.get("saved_bytes"))}`;
  };
  model.on("change:saved_bytes", update);
  model.on("change:nodes", update);
  update();
  return () => {
    model.off("change:saved_bytes", update);
    model.off("change:nodes", update);
  };
}

export default {
  render({ model, el, host }) {
    el.classList.add("gradwidget");
    const ctx = createContext();
    const cleanups = [mountHeader({ model, el }), mountGraph({ model, host, el, ctx })];
    return () => cleanups.forEach((fn) => fn());
  },
};
