// The graph widget's `_esm`: a stub sent with every widget instance. The real front-end
// (widget.js + widget.css, ~50 KB) ships once per page inside the loader widget
// (gradwidget/_loader.py, loader.js); this imports it from there and hands over.

/**
 * Show a plain message (the front-end's CSS may not be loaded).
 * @param {HTMLElement} el
 * @param {string} text
 */
function fail(el, text) {
  const div = document.createElement("div");
  div.style.cssText = "padding:8px;color:#b00020;font:13px sans-serif";
  div.textContent = text;
  el.replaceChildren(div);
}

export default {
  async render(props) {
    const { model, el, host } = props;
    let mod;
    try {
      const ref = model.get("loader");
      if (!ref || !host) throw new Error("the loader widget is missing (update anywidget to >= 0.10)");
      const loader = await host.getWidget(ref);
      mod = await loader.exports.frontend;
    } catch (e) {
      fail(el, `gradwidget could not load its front-end: ${(e && e.message) || e}`);
      return undefined;
    }
    return mod.default.render(props);
  },
};
