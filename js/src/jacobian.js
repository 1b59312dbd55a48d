// Jacobian explorer front-end (placeholder; see gradwidget/_jacobian.py).
export default {
  render({ el }) {
    el.textContent = "Jacobian explorer";
  },
};
