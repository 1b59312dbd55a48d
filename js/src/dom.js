// The DOM builder shared by every view: one element, its class (or properties), text and
// parent in one call.

/**
 * Create an element.
 * @param {string} tag
 * @param {string|Record<string, any>} [cls] className (left unset when empty), or
 *   properties: `class` is the className, `dataset` is merged, names the element has as
 *   properties are set as such (`type`, `value`, `title`, `checked`…), others as attributes
 *   (`aria-label`)
 * @param {Node|null} [parent] appended to, when given
 * @param {string} [text] textContent, when given
 * @returns {any} the element (typed loosely: inputs, selects and canvases alike)
 */
export function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (typeof cls === "string") {
    if (cls) e.className = cls;
  } else if (cls) {
    for (const [k, v] of Object.entries(cls)) {
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k in e) e[k] = v;
      else e.setAttribute(k, v);
    }
  }
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
