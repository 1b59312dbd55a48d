// Index bookkeeping for the Jacobian heatmap: flat row/column <-> named multi-indices.

/**
 * Row-major multi-index of `flat` in `shape` ("" for a scalar).
 * @param {number} flat
 * @param {number[]} shape
 * @returns {string}
 */
export function unravel(flat, shape) {
  if (!shape.length) return "";
  const idx = new Array(shape.length);
  let rest = flat;
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = rest % shape[d];
    rest = Math.floor(rest / shape[d]);
  }
  return `[${idx.join(",")}]`;
}

const prod = (shape) => shape.reduce((a, b) => a * b, 1);

/**
 * @typedef {object} Axes
 * @property {number} m outputs (rows of J)
 * @property {number} n inputs (columns of J)
 * @property {number} rows displayed rows (after block summary)
 * @property {number} cols displayed columns
 * @property {number} rb rows per displayed cell
 * @property {number} cb columns per displayed cell
 * @property {{name: string, shape: number[], start: number, size: number}[]} groups inputs
 * @property {(i: number) => string} rowLabel label of output i, e.g. "y[0,2]"
 * @property {(j: number) => string} colLabel label of input column j, e.g. "b[1]"
 */

/**
 * Axes of the current model state.
 * @param {any} model anywidget model
 * @returns {Axes}
 */
export function axesOf(model) {
  const outShape = model.get("out_shape");
  const outName = model.get("out_name");
  const names = model.get("in_names");
  const shapes = model.get("in_shapes");
  const [rows, cols] = model.get("heat").shape;
  const [rb, cb] = model.get("blocks");
  const groups = [];
  let start = 0;
  shapes.forEach((shape, k) => {
    const size = prod(shape);
    groups.push({ name: names[k], shape, start, size });
    start += size;
  });
  return {
    m: prod(outShape),
    n: start,
    rows,
    cols,
    rb,
    cb,
    groups,
    rowLabel: (i) => `${outName}${unravel(i, outShape)}`,
    colLabel: (j) => {
      const g = groups.find((gr) => j >= gr.start && j < gr.start + gr.size) || groups[0];
      return `${g.name}${unravel(j - g.start, g.shape)}`;
    },
  };
}
