// Export of the drawn graph: the "SVG" and "PNG" header buttons and the files they save.

import { el } from "./dom.js";

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * The graph as a standalone SVG file's text and its size in pt.
 * @param {SVGSVGElement} svg the drawn graph (panned/zoomed: the file shows all of it)
 * @returns {{text: string, w: number, h: number}}
 */
export function standaloneSvg(svg) {
  const copy = /** @type {SVGSVGElement} */ (svg.cloneNode(true));
  const vb = svg.dataset.baseViewBox || svg.getAttribute("viewBox") || "";
  const [x, y, w, h] = vb.split(" ").map(Number);
  copy.setAttribute("viewBox", vb);
  copy.setAttribute("width", `${w}pt`);
  copy.setAttribute("height", `${h}pt`);
  copy.setAttribute("xmlns", SVG_NS);
  copy.removeAttribute("data-base-view-box");
  // The file carries the light DOT colours (not the page's theme CSS): give it an opaque
  // white background so it reads in dark viewers too.
  const bg = document.createElementNS(SVG_NS, "rect");
  for (const [k, v] of Object.entries({ x, y, width: w, height: h, fill: "#ffffff" })) {
    bg.setAttribute(k, String(v));
  }
  bg.setAttribute("class", "gw-export-bg");
  copy.insertBefore(bg, copy.firstChild);
  return { text: new XMLSerializer().serializeToString(copy), w, h };
}

/**
 * The same SVG drawn on a canvas at 2x (less for huge graphs: canvases top out ~16k px).
 * @param {{text: string, w: number, h: number}} out from standaloneSvg
 * @returns {Promise<Blob|null>}
 */
export async function pngOf(out) {
  const px = { w: (out.w * 4) / 3, h: (out.h * 4) / 3 };
  const scale = Math.min(2, 16000 / Math.max(px.w, px.h, 1));
  const url = URL.createObjectURL(new Blob([out.text], { type: "image/svg+xml" }));
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(px.w * scale));
    canvas.height = Math.max(1, Math.round(px.h * scale));
    canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
    return await new Promise((r) => canvas.toBlob(r, "image/png"));
  } finally {
    URL.revokeObjectURL(url);
  }
}

/**
 * Save `blob` as a download named `<name>.<ext>`.
 * @param {Blob} blob @param {string} name @param {string} ext
 */
function download(blob, name, ext) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = `${name}.${ext}`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/**
 * Add the SVG and PNG export buttons to `tools`.
 * @param {{model: any, tools: HTMLElement, svg: () => SVGSVGElement|null}} args `svg` gives
 *   the graph drawn now (null when none is)
 */
export function mountExport({ model, tools, svg }) {
  const svgBtn = el("button", "gw-export", tools, "SVG");
  svgBtn.title = "Download the rendered graph as SVG";
  const pngBtn = el("button", "gw-export-png", tools, "PNG");
  pngBtn.title = "Download the rendered graph as PNG (2x)";
  const name = () => model.get("title") || "autograd-graph";
  svgBtn.addEventListener("click", () => {
    const drawn = svg();
    if (drawn) download(new Blob([standaloneSvg(drawn).text], { type: "image/svg+xml" }), name(), "svg");
  });
  pngBtn.addEventListener("click", async () => {
    const drawn = svg();
    if (!drawn) return;
    try {
      const blob = await pngOf(standaloneSvg(drawn));
      if (blob) download(blob, name(), "png");
    } catch (e) {
      console.warn("gradwidget: PNG export failed", e);
    }
  });
}
