// Finding your way in the graph: the search box (Ctrl/⌘+F while the graph has focus) and
// keyboard moves from the selected node. Restyles only (style layer "search"); the view is
// laid out again only when a module must open to show a node.
//
// Matching is the kernel's: each node's haystack (its name, label, op, module path, module
// class and shape, lowercased) comes in the node table's `search` column
// (gradwidget/_search.py, which w.search() uses too); here a query only tests
// `haystack.includes(query)`.
import { el } from "./dom.js";
import { nodeTable } from "./wire.js";

/**
 * Rows whose haystack contains the query (trimmed, lowercased), in forward order.
 * @param {string[]} hay the `search` column
 * @param {string} query
 * @returns {number[]}
 */
export function findRows(hay, query) {
  const q = String(query || "").trim().toLowerCase();
  if (!q) return [];
  const out = [];
  for (let i = 0; i < hay.length; i++) if (hay[i] && hay[i].includes(q)) out.push(i);
  return out;
}

/**
 * Each row's consumers (rows that take it as an input), from the `inputs` column.
 * @param {number[][]} inputs
 * @returns {number[][]}
 */
export function consumers(inputs) {
  const out = inputs.map(() => []);
  inputs.forEach((ins, dst) => ins.forEach((src) => out[src]?.push(dst)));
  return out;
}

/**
 * Where an arrow key goes from `row`: ArrowUp to an input, ArrowDown to a consumer,
 * ArrowLeft/Right to the previous/next alternative of the last up/down move.
 * @param {{row: number, key: string, inputs: number[][], outs: number[][],
 *   alts: {list: number[], i: number}|null}} args
 * @returns {{row: number, alts: {list: number[], i: number}|null}|null}
 */
export function step({ row, key, inputs, outs, alts }) {
  if (key === "ArrowUp" || key === "ArrowDown") {
    const list = (key === "ArrowUp" ? inputs[row] : outs[row]) || [];
    return list.length ? { row: list[0], alts: { list, i: 0 } } : null;
  }
  if ((key === "ArrowLeft" || key === "ArrowRight") && alts && alts.list.length > 1) {
    const n = alts.list.length;
    const i = (alts.i + (key === "ArrowRight" ? 1 : n - 1)) % n;
    return { row: alts.list[i], alts: { list: alts.list, i } };
  }
  return null;
}

/**
 * Mount the search box (in the header tools) and the graph's keyboard.
 * @param {{model: any, ctx: any, pane: HTMLElement, tools: HTMLElement}} args
 * @returns {() => void} cleanup
 */
export function mountFind({ model, ctx, pane, tools }) {
  const box = el("span", "gw-find", tools);
  const input = el("input", "gw-find-input", box);
  input.type = "search";
  const mod = /Mac|iP/.test(navigator.platform) ? "⌘" : "Ctrl";
  input.placeholder = `find (${mod}+F)`;
  input.title =
    "Find nodes by name, op, module path or shape. Enter / ↓: next, Shift+Enter / ↑: previous, " +
    "Esc: clear. With a node selected in the graph: ↑ input, ↓ consumer, ←/→ the other " +
    "inputs or consumers, Enter opens the module it is in, Backspace closes it, Esc clears.";
  const count = el("span", "gw-find-count", box);
  /** @type {number[]} */
  let matches = [];
  let cur = -1;
  /** @type {{list: number[], i: number}|null} */
  let alts = null;
  /** @type {string|null} a node to centre once the layout that opens its module is drawn */
  let pendingCenter = null;

  const table = () => nodeTable(model);
  const restyle = () => {
    const ids = table().id || [];
    const styles = new Map();
    matches.forEach((r, k) => styles.set(ids[r], { cls: k === cur ? "gw-match gw-match-current" : "gw-match" }));
    ctx.setNodeStyles(styles, "search");
    count.textContent = matches.length ? `${cur >= 0 ? cur + 1 : 0}/${matches.length}` : input.value.trim() ? "0" : "";
    box.dataset.matches = String(matches.length);
  };
  const update = () => {
    matches = findRows(table().search || [], input.value);
    cur = -1;
    restyle();
  };

  /** Show node `row`: open the collapsed module it is in, centre it, select it. */
  const reveal = (row) => {
    const t = table();
    const id = t.id[row];
    const unit = ctx.unitOf(id);
    const path = t.module[row];
    let opening = false;
    if (unit && unit[0] === "m" && path) {
      const expanded = model.get("expanded") || [];
      if (!expanded.includes(path)) {
        model.set("expanded", [...expanded, path]);
        opening = true;
      }
    }
    model.set("selected", id);
    model.save_changes();
    if (opening) pendingCenter = id;
    else ctx.center?.(id);
    pane.dataset.found = id;
  };
  const go = (delta) => {
    if (!matches.length) return;
    cur = cur < 0 ? (delta > 0 ? 0 : matches.length - 1) : (cur + delta + matches.length) % matches.length;
    restyle();
    reveal(matches[cur]);
  };
  const clear = () => {
    input.value = "";
    update();
    alts = null;
    if (model.get("selected")) {
      model.set("selected", "");
      model.save_changes();
    }
  };

  input.addEventListener("input", update);
  input.addEventListener("keydown", (ev) => {
    const keys = { Enter: ev.shiftKey ? -1 : 1, ArrowDown: 1, ArrowUp: -1 };
    if (ev.key in keys) go(keys[ev.key]);
    else if (ev.key === "Escape") {
      clear();
      pane.focus();
    } else return;
    ev.preventDefault();
    ev.stopPropagation(); // the notebook's own shortcuts (cell moves, command mode) stay out
  });

  const onPaneKey = (ev) => {
    if (ev.target === input) return;
    if ((ev.ctrlKey || ev.metaKey) && (ev.key === "f" || ev.key === "F")) {
      input.focus();
      input.select();
    } else if (ev.key === "Escape") {
      clear();
    } else if (!onNodeKey(ev)) {
      return;
    }
    ev.preventDefault();
    ev.stopPropagation();
  };
  /** Arrows, Enter and Backspace from the selected node; true when the key was used. */
  const onNodeKey = (ev) => {
    const t = table();
    const row = ctx.nodeIndex.get(model.get("selected"));
    if (row === undefined) return false;
    if (ev.key === "Enter") {
      reveal(row);
      return true;
    }
    if (ev.key === "Backspace") {
      const path = t.module[row];
      if (path && ctx.unitOf(t.id[row])?.[0] === "n") ctx.collapse?.(path);
      return Boolean(path);
    }
    const inputs = t.inputs || [];
    const next = step({ row, key: ev.key, inputs, outs: consumers(inputs), alts });
    if (!next) return ev.key.startsWith("Arrow"); // no move: still ours, not the page's
    alts = next.alts;
    model.set("selected", t.id[next.row]);
    model.save_changes();
    ctx.center?.(t.id[next.row]);
    return true;
  };
  pane.addEventListener("keydown", onPaneKey);
  const offDrawn = ctx.on("drawn", () => {
    if (pendingCenter) ctx.center?.(pendingCenter);
    pendingCenter = null;
  });
  const onNodes = () => update();
  model.on("change:nodes", onNodes);
  return () => {
    pane.removeEventListener("keydown", onPaneKey);
    offDrawn?.();
    model.off("change:nodes", onNodes);
    box.remove();
  };
}
