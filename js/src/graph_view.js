// The graph pane: lays out the DOT once per structure change and restyles in place.
import { getViz, layout } from "./graphviz.js";

/**
 * Mount the graph view.
 * @param {{model: any, host: any, el: HTMLElement, ctx: any}} args
 * @returns {() => void} cleanup
 */
export function mountGraph({ model, host, el, ctx }) {
  const pane = document.createElement("div");
  pane.className = "gw-graph";
  el.appendChild(pane);
  /** @type {Map<string, SVGGElement>} dot name -> node group */
  let byName = new Map();

  const nodeIndex = () => {
    const ids = model.get("nodes").id || [];
    return new Map(ids.map((id, i) => [id, i]));
  };
  let indexOf = nodeIndex();

  function showMessage(text, cls = "gw-message") {
    pane.replaceChildren();
    const div = document.createElement("div");
    div.className = cls;
    div.textContent = text;
    pane.appendChild(div);
  }

  async function draw() {
    const err = model.get("view_error");
    if (err) return showMessage(err, "gw-message gw-error");
    showMessage("laying out…");
    let viz;
    try {
      viz = await getViz(model, host);
    } catch (e) {
      return showMessage(`Could not load Graphviz: ${e.message}`, "gw-message gw-error");
    }
    let svg;
    try {
      svg = layout(viz, model.get("dot"));
    } catch (e) {
      return showMessage(`Graphviz could not lay out this graph: ${e.message}`, "gw-message gw-error");
    }
    pane.replaceChildren(svg);
    byName = new Map();
    for (const g of svg.querySelectorAll("g.node")) {
      const title = g.querySelector("title");
      if (title) byName.set(title.textContent, g);
    }
    restyleSelection();
    ctx.emit("drawn", { svg, byName });
  }

  function restyleSelection() {
    for (const g of byName.values()) g.classList.remove("gw-selected");
    const sel = model.get("selected");
    if (!sel) return;
    const i = indexOf.get(sel);
    const g = i === undefined ? undefined : byName.get(`n${i}`);
    if (g) g.classList.add("gw-selected");
  }

  pane.addEventListener("click", (ev) => {
    const g = /** @type {Element} */ (ev.target).closest("g.node");
    if (!g) return;
    const name = g.querySelector("title")?.textContent || "";
    const modules = model.get("view_modules");
    if (name in modules) {
      model.set("expanded", [...model.get("expanded"), modules[name]]);
    } else if (name.startsWith("n")) {
      model.set("selected", model.get("nodes").id[Number(name.slice(1))]);
    }
    model.save_changes();
  });

  const onDot = () => draw();
  const onNodes = () => (indexOf = nodeIndex());
  model.on("change:dot", onDot);
  model.on("change:view_error", onDot);
  model.on("change:nodes", onNodes);
  model.on("change:selected", restyleSelection);
  draw();
  return () => {
    model.off("change:dot", onDot);
    model.off("change:view_error", onDot);
    model.off("change:nodes", onNodes);
    model.off("change:selected", restyleSelection);
  };
}
