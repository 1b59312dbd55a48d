// HiDPI canvas setup shared by the plots (gradient plots, run plots).

/**
 * Size a canvas for the device pixel ratio and return its cleared 2D context in CSS pixels.
 * @param {HTMLCanvasElement} canvas
 * @param {number} w CSS width
 * @param {number} h CSS height
 * @returns {CanvasRenderingContext2D}
 */
export function hidpiContext(canvas, w, h) {
  const dpr = globalThis.devicePixelRatio || 1;
  const pw = Math.round(w * dpr);
  const ph = Math.round(h * dpr);
  // Resizing reallocates the bitmap: only when the size changed.
  if (canvas.width !== pw || canvas.height !== ph) {
    canvas.width = pw;
    canvas.height = ph;
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
  }
  const g = canvas.getContext("2d");
  // A kept bitmap keeps its context state: every draw starts from the same one.
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.globalAlpha = 1;
  g.setLineDash([]);
  g.lineWidth = 1;
  g.textAlign = "start";
  g.textBaseline = "alphabetic";
  g.font = "10px sans-serif";
  return g;
}
