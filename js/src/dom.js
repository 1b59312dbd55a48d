// Tiny DOM builder shared by the panels: one element, its class, text and parent in one call.

/**
 * Create an element.
 * @param {string} tag
 * @param {string} [cls] className (left unset when empty)
 * @param {Node} [parent] appended to, when given
 * @param {string} [text] textContent, when given
 * @returns {HTMLElement}
 */
export function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
