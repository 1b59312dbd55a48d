// Tooltips: a box that follows the pointer inside its root (the graph pane, the Jacobian
// view), and the graph pane's hover read-out of nodes, collapsed modules and frames.
import { tooltipRows } from "./module_badges.js";
import { el } from "./dom.js";
import { formatBytes } from "./format.js";
import { moduleTable, nodeTable } from "./wire.js";

/**
 * A hidden box in `root` that shows next to the pointer, kept inside `root`.
 * @param {HTMLElement} root positioned (relative/absolute): the box is placed in it
 * @param {string} cls
 */
export function makeTooltip(root, cls) {
  const tip = el("div", cls, root);
  tip.hidden = true;
  return {
    el: tip,
    /** @param {(Node|string)[]} parts */
    fill(parts) {
      tip.replaceChildren(...parts);
    },
    /** Show it 14 px below right of the pointer (left/up where it would leave `root`). */
    place(/** @type {MouseEvent} */ evt) {
      tip.hidden = false;
      const r = root.getBoundingClientRect();
      const x = evt.clientX - r.left + 14;
      const y = evt.clientY - r.top + 14;
      tip.style.left = `${Math.min(x, Math.max(0, r.width - tip.offsetWidth - 4))}px`;
      tip.style.top = `${Math.min(y, Math.max(0, r.height - tip.offsetHeight - 4))}px`;
    },
    /** Lines of text, one per row, at the pointer. */
    show(/** @type {MouseEvent} */ evt, /** @type {string[]} */ lines) {
      this.fill(lines.map((l) => el("div", "", null, l)));
      this.place(evt);
    },
    hide() {
      tip.hidden = true;
    },
  };
}

/**
 * Rows of the tooltip of a drawn unit (node `n<i>`, collapsed module `m<j>`) or an open
 * module's frame.
 * @param {any} model
 * @param {Element} g its `g.node` / `g.cluster`
 * @param {any} [ctx] the view's context (a collapsed box's gradients: ctx.moduleGrads)
 * @returns {[string, string][]}
 */
function describe(model, g, ctx) {
  const name = g.getAttribute("data-name") || "";
  const modules = moduleTable(model);
  /** An open module's frame (`open`), or a collapsed module's box. */
  const moduleRows = (path, open) => {
    const info = modules[path] || {};
    return [
      ["module", `${path} (${info.type || "Module"})`],
      open
        ? ["ops", `${info.ops ?? "?"}, ${info.params ?? 0} params`]
        : ["contains", `${info.ops ?? 0} ops, ${info.params ?? 0} params`],
      ["saved for backward", formatBytes(info.saved_bytes || 0)],
      // A collapsed box's gradients (module_badges.js), while they are watched.
      ...(open ? [] : tooltipRows(ctx?.moduleGrads?.(path))),
      ["", open ? "click the frame or its label to collapse" : "click to expand"],
    ];
  };
  if (g.classList.contains("cluster")) return moduleRows(g.getAttribute("data-module") || "", true);
  const vm = model.get("view_modules") || {};
  if (name in vm) return moduleRows(vm[name], false);
  const i = Number(name.slice(1));
  const t = nodeTable(model);
  const rows = [["kind", t.kind[i]]];
  if (t.name[i]) rows.push(["name", t.name[i]]);
  if (t.op[i]) rows.push(["op", t.op[i]]);
  if (t.shape[i]) rows.push(["shape", `(${t.shape[i].join(", ")})`]);
  if (t.dtype[i]) rows.push(["dtype", t.dtype[i]]);
  if (t.module[i]) rows.push(["module", t.module[i]]);
  if (t.source[i]) rows.push(["source", t.source[i]]);
  rows.push(["saved for backward", formatBytes(t.saved_bytes[i] || 0)]);
  return rows;
}

/**
 * The graph pane's tooltip; emits ctx "hover" as the pointer moves between units.
 * @param {{model: any, pane: HTMLElement, ctx: any, wasDrag: () => boolean}} args
 * @returns {{reset(): void, destroy(): void}} `reset` forgets the unit under the pointer
 *   (call it when the SVG is replaced)
 */
export function mountGraphTooltip({ model, pane, ctx, wasDrag }) {
  const tip = makeTooltip(pane, "gw-tooltip");
  /** @type {Element|null} node or cluster under the pointer */
  let hovered = null;
  const reset = () => {
    hovered = null;
    tip.hide();
  };

  const onMove = (/** @type {PointerEvent} */ ev) => {
    const t = /** @type {Element} */ (ev.target);
    const g = t?.closest?.("g.node") || t?.closest?.("g.cluster") || null;
    if (!g || wasDrag()) {
      if (hovered) ctx.emit("hover", null);
      reset();
      return;
    }
    if (g !== hovered) {
      hovered = g;
      tip.fill(
        describe(model, g, ctx).map(([k, v]) => {
          const row = el("div", k ? "" : "gw-hint");
          if (k) el("b", "", row, `${k}: `);
          row.appendChild(document.createTextNode(String(v)));
          return row;
        }),
      );
      const name = g.getAttribute("data-name") || "";
      const i = name[0] === "n" ? Number(name.slice(1)) : -1;
      ctx.emit("hover", {
        id: i >= 0 ? nodeTable(model).id[i] : null,
        module: (model.get("view_modules") || {})[name] || g.getAttribute("data-module") || null,
      });
    }
    tip.place(ev);
  };
  pane.addEventListener("pointermove", onMove);
  pane.addEventListener("pointerleave", reset);
  return {
    reset,
    destroy() {
      pane.removeEventListener("pointermove", onMove);
      pane.removeEventListener("pointerleave", reset);
      tip.el.remove();
    },
  };
}
