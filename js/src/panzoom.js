// Pan (drag) and zoom (wheel) of an SVG by rewriting its viewBox: no re-layout, no re-render.
// A plain wheel over the graph scrolls the notebook, as everywhere else on the page; it zooms
// with Ctrl/⌘ held (trackpad pinch arrives as ctrl+wheel) or once the graph has focus (after
// a click in it). A plain wheel over an unfocused graph shows a short hint saying so.
import { el } from "./dom.js";

const DRAG_THRESHOLD_PX = 4;
/** How long the "how to zoom" hint stays up after a plain wheel, ms. */
const HINT_MS = 1500;

/**
 * @typedef {{x: number, y: number, w: number, h: number}} Box
 */

/**
 * Attach pan/zoom to `pane`, which shows one `<svg>` at a time (swap it with `setSvg`).
 * @param {HTMLElement} pane
 * @returns {{setSvg(svg: SVGSVGElement): void, fit(): void, reset(): void,
 *   center(el: Element): void, wasDrag(): boolean, destroy(): void}}
 */
export function panZoom(pane) {
  /** @type {SVGSVGElement|null} */
  let svg = null;
  /** @type {Box} */
  let base = { x: 0, y: 0, w: 1, h: 1 };
  /** @type {Box} */
  let view = { ...base };
  let drag = null;
  let dragged = false;

  const apply = () => {
    if (svg) svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
  };
  const paneSize = () => ({
    w: pane.clientWidth || 600,
    h: pane.clientHeight || 400,
  });
  // Graphviz sizes are in points; the pane in CSS px (1pt = 4/3 px).
  const PX_PER_PT = 4 / 3;

  /** Show the graph at `scale` (1 = natural size) centered on (cx, cy) in viewBox units. */
  function show(scale, cx, cy) {
    const p = paneSize();
    view = { w: p.w / scale / PX_PER_PT, h: p.h / scale / PX_PER_PT, x: 0, y: 0 };
    view.x = cx - view.w / 2;
    view.y = cy - view.h / 2;
    apply();
  }

  /** Whole graph in view, never enlarged past natural size. */
  function fit() {
    const p = paneSize();
    const s = Math.min(1, p.w / (base.w * PX_PER_PT), p.h / (base.h * PX_PER_PT));
    show(s, base.x + base.w / 2, base.y + base.h / 2);
  }

  /** Initial view: fit when that stays readable; else readable size from the top. */
  function reset() {
    const p = paneSize();
    const sFit = Math.min(1, p.w / (base.w * PX_PER_PT), p.h / (base.h * PX_PER_PT));
    if (sFit >= 0.6) return fit();
    const s = Math.min(1, Math.max(0.6, p.w / (base.w * PX_PER_PT)));
    const w = p.w / s / PX_PER_PT;
    view = { x: base.x + (base.w - w) / 2, y: base.y, w, h: p.h / s / PX_PER_PT };
    apply();
  }

  /** Client (px) point -> SVG user units of the current view. */
  function toUser(clientX, clientY) {
    const r = pane.getBoundingClientRect();
    const k = view.w / (r.width || 1);
    return { x: view.x + (clientX - r.left) * k, y: view.y + (clientY - r.top) * k };
  }

  /** Pan so `target` (inside the svg) is centered, when it is outside the view. */
  function center(target) {
    if (!svg || !target) return;
    const g = /** @type {SVGGraphicsElement} */ (target);
    const bb = g.getBBox?.();
    const outer = svg.getScreenCTM?.();
    const inner = g.getScreenCTM?.();
    if (!bb || !outer || !inner) return;
    // Element coordinates -> viewBox coordinates (Graphviz nests a translated <g>).
    const pt = new DOMPoint(bb.x + bb.width / 2, bb.y + bb.height / 2).matrixTransform(
      outer.inverse().multiply(inner),
    );
    const { x, y } = pt;
    const inside = x > view.x && x < view.x + view.w && y > view.y && y < view.y + view.h;
    if (!inside) {
      view.x = x - view.w / 2;
      view.y = y - view.h / 2;
      apply();
    }
  }

  const hint = el("div", "gw-zoom-hint", pane, `${/Mac|iP/.test(navigator.platform) ? "⌘" : "Ctrl"} + scroll to zoom, or click the graph first`);
  hint.hidden = true;
  let hintTimer = 0;
  const showHint = () => {
    hint.hidden = false;
    clearTimeout(hintTimer);
    hintTimer = setTimeout(() => (hint.hidden = true), HINT_MS);
  };
  /** Zoom on a plain wheel only while the graph (or something in it) has focus. */
  const focused = () => pane.contains(document.activeElement);

  const onWheel = (ev) => {
    if (!svg) return;
    if (!ev.ctrlKey && !ev.metaKey && !focused()) {
      showHint(); // leave the event alone: the page scrolls
      return;
    }
    ev.preventDefault();
    hint.hidden = true;
    const f = Math.exp(Math.max(-1, Math.min(1, ev.deltaY / 300)));
    const p = toUser(ev.clientX, ev.clientY);
    const w = Math.max(base.w / 200, Math.min(view.w * f, base.w * 20));
    const k = w / view.w;
    view = { x: p.x - (p.x - view.x) * k, y: p.y - (p.y - view.y) * k, w, h: view.h * k };
    apply();
  };
  const onDown = (ev) => {
    if (ev.button !== 0 || !svg) return;
    drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, id: ev.pointerId };
    dragged = false;
  };
  const onMove = (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x;
    const dy = ev.clientY - drag.y;
    if (!dragged && Math.hypot(dx, dy) < DRAG_THRESHOLD_PX) return;
    if (!dragged) {
      dragged = true;
      pane.classList.add("gw-dragging");
      pane.setPointerCapture?.(drag.id);
    }
    const k = view.w / (pane.getBoundingClientRect().width || 1);
    view.x = drag.vx - dx * k;
    view.y = drag.vy - dy * k;
    apply();
  };
  const onUp = (ev) => {
    if (!drag) return;
    pane.releasePointerCapture?.(drag.id);
    pane.classList.remove("gw-dragging");
    drag = null;
    // `dragged` stays set until the click that follows this pointerup has been seen.
    if (dragged) setTimeout(() => (dragged = false), 0);
    ev.stopPropagation();
  };
  const listeners = [
    ["wheel", onWheel, { passive: false }],
    ["pointerdown", onDown],
    ["pointermove", onMove],
    ["pointerup", onUp],
    ["pointercancel", onUp],
  ];
  for (const [type, fn, opts] of listeners) pane.addEventListener(type, fn, opts);

  return {
    setSvg(next) {
      svg = next;
      const vb = (svg.getAttribute("viewBox") || "").split(/[\s,]+/).map(Number);
      if (vb.length === 4 && vb.every(Number.isFinite) && vb[2] > 0 && vb[3] > 0) {
        svg.dataset.baseViewBox = vb.join(" ");
        base = { x: vb[0], y: vb[1], w: vb[2], h: vb[3] };
      } else {
        const bb = svg.getBBox();
        base = { x: bb.x, y: bb.y, w: bb.width || 1, h: bb.height || 1 };
      }
      svg.removeAttribute("width");
      svg.removeAttribute("height");
      svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
      reset();
    },
    /** Natural size of the current graph in CSS px. */
    natural() {
      return { w: base.w * PX_PER_PT, h: base.h * PX_PER_PT };
    },
    fit,
    reset,
    center,
    wasDrag: () => dragged,
    destroy() {
      clearTimeout(hintTimer);
      hint.remove();
      for (const [type, fn] of listeners) pane.removeEventListener(type, fn);
    },
  };
}
