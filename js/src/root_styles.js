// Styles and theme in the widget's own root, whatever the notebook host.
// JupyterLab and Notebook 7 put widget views in the page's document; marimo renders each
// anywidget view inside a shadow root, which page styles do not reach; Colab and VS Code
// give each output its own iframe (its own document and module instance). So the
// stylesheet goes into the root the view lives in (once per root), and the light/dark
// choice is written on the widget element itself, where the CSS can see it in any root.

/** @type {WeakMap<Node, true>} roots that already have this module's stylesheet */
const styled = new WeakMap();
/** @type {WeakMap<Document, CSSStyleSheet>} one constructed sheet per document, shared by its shadow roots */
const sheets = new WeakMap();
let cssText = "";
let cssKey = "";

/**
 * Take the stylesheet this front-end applies to every root it renders in.
 * @param {string} css
 * @param {string} key identifies this stylesheet (content digest)
 */
export function setStylesheet(css, key) {
  cssText = css;
  cssKey = key;
}

const isShadowRoot = (/** @type {Node} */ n) => n.nodeType === 11 && "host" in n;
const isDocument = (/** @type {Node} */ n) => n.nodeType === 9;

/**
 * Put the stylesheet into `root` (a Document or ShadowRoot) unless it is there already.
 * @param {Document|ShadowRoot} root
 */
function styleRoot(root) {
  if (!cssText || styled.has(root)) return;
  styled.set(root, true);
  const doc = isDocument(root) ? /** @type {Document} */ (root) : root.ownerDocument;
  const view = doc.defaultView;
  if (isShadowRoot(root) && view && "adoptedStyleSheets" in root && view.CSSStyleSheet) {
    // Built in the root's own realm: a sheet from another document cannot be adopted.
    let sheet = sheets.get(doc);
    if (!sheet) {
      sheet = new view.CSSStyleSheet();
      sheet.replaceSync(cssText);
      sheets.set(doc, sheet);
    }
    root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
    return;
  }
  if (root.querySelector(`style[data-gradwidget="${cssKey}"]`)) return;
  const style = doc.createElement("style");
  style.dataset.gradwidget = cssKey;
  style.textContent = cssText;
  // A shadow root without adoptedStyleSheets takes the <style> inside itself.
  const parent = isDocument(root) ? doc.head || doc.documentElement : root;
  parent.appendChild(style);
}

/**
 * Style the root `el` lives in. A view element may still be detached when render() runs
 * (ipywidgets attaches it afterwards): then style its document now and the real root
 * (a shadow root, say) once the element is laid out there.
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
export function adoptStyles(el) {
  const root = el.getRootNode();
  if (isDocument(root) || isShadowRoot(root)) {
    styleRoot(/** @type {Document|ShadowRoot} */ (root));
    return () => {};
  }
  styleRoot(el.ownerDocument);
  if (typeof ResizeObserver === "undefined") return () => {};
  const ro = new ResizeObserver(() => {
    const r = el.getRootNode();
    if (!isDocument(r) && !isShadowRoot(r)) return;
    styleRoot(/** @type {Document|ShadowRoot} */ (r));
    ro.disconnect();
  });
  ro.observe(el);
  return () => ro.disconnect();
}

/**
 * "dark" or "light" for the page `doc`: JupyterLab's data-jp-theme-light, marimo's
 * body data-theme (it also sets the classes "dark"/"dark-theme"), VS Code's body
 * data-vscode-theme-kind; where the page says none of these, the system preference.
 * @param {Document} doc
 * @returns {"dark"|"light"}
 */
export function pageTheme(doc) {
  const body = doc.body;
  if (!body) return "light";
  const jp = body.dataset.jpThemeLight;
  if (jp === "true" || jp === "false") return jp === "false" ? "dark" : "light";
  const marimo = body.dataset.theme;
  if (marimo === "dark" || marimo === "light") return marimo;
  const vscode = body.dataset.vscodeThemeKind;
  if (vscode) return /dark|high-contrast$/.test(vscode) && !/light/.test(vscode) ? "dark" : "light";
  const media = doc.defaultView && doc.defaultView.matchMedia;
  return media && media("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

/**
 * Keep `el.dataset.gwTheme` ("dark"/"light") in step with the page's theme.
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
export function watchTheme(el) {
  const doc = el.ownerDocument;
  const update = () => {
    const theme = pageTheme(doc);
    if (el.dataset.gwTheme !== theme) el.dataset.gwTheme = theme;
  };
  update();
  const mo = new MutationObserver(update);
  const attributeFilter = ["class", "data-theme", "data-jp-theme-light", "data-vscode-theme-kind"];
  if (doc.body) mo.observe(doc.body, { attributes: true, attributeFilter });
  const mq = doc.defaultView && doc.defaultView.matchMedia && doc.defaultView.matchMedia("(prefers-color-scheme: dark)");
  if (mq) mq.addEventListener("change", update);
  return () => {
    mo.disconnect();
    if (mq) mq.removeEventListener("change", update);
  };
}
