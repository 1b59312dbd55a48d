// Restyling of drawn nodes without re-layout: the engine behind ctx.setNodeStyles.
// See the JSDoc block at the top of widget.js for the contract other views rely on.

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * @typedef {{fill?: string, stroke?: string, badge?: string, cls?: string, value?: number}} NodeStyle
 */

/**
 * The main shape of a Graphviz node group: the first filled polygon/path/ellipse.
 * @param {Element} g
 * @returns {SVGElement|null}
 */
export function mainShape(g) {
  for (const s of g.querySelectorAll("polygon, path, ellipse")) {
    if (s.getAttribute("fill") !== "none") return /** @type {SVGElement} */ (s);
  }
  return /** @type {SVGElement|null} */ (g.querySelector("polygon, path, ellipse"));
}

/**
 * Merge style layers into one style per drawn unit.
 * @param {Map<string, Map<string, NodeStyle>>} layers in creation order
 * @param {(id: string) => string|undefined} unitOf node id -> DOT unit name
 * @returns {Map<string, NodeStyle>}
 */
export function resolveStyles(layers, unitOf) {
  /** @type {Map<string, NodeStyle>} */
  const out = new Map();
  for (const styles of layers.values()) {
    // Per module box: the member with the largest value; classes are unioned.
    /** @type {Map<string, {best: NodeStyle, v: number, cls: Set<string>}>} */
    const boxes = new Map();
    for (const [id, st] of styles) {
      const unit = unitOf(id);
      if (!unit || !st) continue;
      if (unit[0] !== "m") {
        out.set(unit, { ...out.get(unit), ...st });
        continue;
      }
      const v = typeof st.value === "number" && !Number.isNaN(st.value) ? st.value : -Infinity;
      const box = boxes.get(unit);
      if (!box) {
        boxes.set(unit, { best: st, v, cls: new Set(st.cls ? st.cls.split(/\s+/) : []) });
      } else {
        if (v > box.v) {
          box.best = st;
          box.v = v;
        }
        if (st.cls) for (const c of st.cls.split(/\s+/)) box.cls.add(c);
      }
    }
    for (const [unit, box] of boxes) {
      const { cls: _ignored, ...rest } = box.best;
      const merged = { ...out.get(unit), ...rest };
      if (box.cls.size) merged.cls = [...box.cls].filter(Boolean).join(" ");
      out.set(unit, merged);
    }
  }
  return out;
}

/**
 * Apply resolved styles to the drawn units; units styled before but absent now are reset.
 * @param {Map<string, Element>} units DOT name -> <g class="node">
 * @param {Map<string, NodeStyle>} styles
 * @param {Set<string>} applied units styled by the previous call (updated in place)
 */
export function applyStyles(units, styles, applied) {
  for (const name of applied) {
    if (!styles.has(name)) {
      const g = units.get(name);
      if (g) paint(g, {});
      applied.delete(name);
    }
  }
  for (const [name, st] of styles) {
    const g = units.get(name);
    if (!g) continue;
    paint(g, st);
    applied.add(name);
  }
}

/**
 * @param {Element & {__gwStyle?: string, __gwCls?: string[]}} g
 * @param {NodeStyle} st
 */
function paint(g, st) {
  const key = `${st.fill}|${st.stroke}|${st.badge}|${st.cls}`;
  if (g.__gwStyle === key) return; // unchanged: skip DOM writes (10 Hz updates)
  g.__gwStyle = key;
  const shape = mainShape(g);
  if (shape) {
    shape.style.fill = st.fill || "";
    shape.style.stroke = st.stroke || "";
  }
  for (const c of g.__gwCls || []) g.classList.remove(c);
  g.__gwCls = st.cls ? st.cls.split(/\s+/).filter(Boolean) : [];
  for (const c of g.__gwCls) g.classList.add(c);
  let badge = g.querySelector(":scope > text.gw-badge");
  if (!st.badge) {
    badge?.remove();
    return;
  }
  if (!badge) {
    badge = document.createElementNS(SVG_NS, "text");
    badge.setAttribute("class", "gw-badge");
    badge.setAttribute("text-anchor", "end");
    const bb = /** @type {SVGGraphicsElement|null} */ (shape)?.getBBox?.();
    if (bb) {
      badge.setAttribute("x", String(bb.x + bb.width - 2));
      badge.setAttribute("y", String(bb.y - 2));
    }
    g.appendChild(badge);
  }
  badge.textContent = st.badge;
}
