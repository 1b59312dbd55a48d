// Training controls: lr (log slider + typeable value), optimizer and its settings, schedule,
// step count, run/pause/step/stop/reset/clear/lr-find buttons, progress bar, output area.
// Every control only sets synced traits or sends {type: "train", action} to the kernel:
// the runner (gradwidget/_train.py) owns all behaviour.
import { el } from "./dom.js";
import { formatDuration, formatLr } from "./format.js";
import { constants } from "./shared.js";

const LR_MIN_EXP = -5;
const LR_MAX_EXP = 1;

/** Setting name -> label and input kind, for the settings that apply per optimizer. */
const SETTING_UI = {
  momentum: { label: "momentum", step: "0.05", min: "0", max: "0.999" },
  nesterov: { label: "Nesterov", bool: true },
  beta1: { label: "β1", step: "0.01", min: "0", max: "0.9999" },
  beta2: { label: "β2", step: "0.001", min: "0", max: "0.99999" },
  alpha: { label: "α", step: "0.01", min: "0", max: "0.9999" },
  weight_decay: { label: "weight decay", step: "0.001", min: "0" },
};

/**
 * An element of class `cls` holding `parts` (elements and text), in order.
 * @param {string} tag @param {string} cls @param {...(Node|string)} parts
 */
function holding(tag, cls, ...parts) {
  const e = el(tag, cls);
  e.append(...parts);
  return e;
}

/**
 * Mount the controls, progress bar and output area into ctx.panels.bottom.
 * @param {{model: any, el: HTMLElement, ctx: any}} args
 * @returns {() => void} cleanup
 */
export function mountControls({ model, ctx }) {
  const send = (action) => model.send({ type: "train", action });
  const commit = (name, value) => {
    model.set(name, value);
    model.save_changes();
  };

  // -- learning rate: a log10 range input plus a typeable field --
  const slider = el("input", {
    type: "range",
    class: "gw-lr-slider",
    min: String(LR_MIN_EXP),
    max: String(LR_MAX_EXP),
    step: "0.01",
    title: "learning rate (log scale)",
    "aria-label": "learning rate (log scale)",
  });
  const lrText = el("input", {
    type: "text",
    class: "gw-lr-value",
    size: 7,
    title: "learning rate: type a value and press Enter",
    "aria-label": "learning rate",
  });
  const showLr = () => {
    const lr = model.get("lr");
    slider.value = String(Math.log10(lr));
    if (document.activeElement !== lrText) lrText.value = formatLr(lr);
    lrText.classList.remove("gw-invalid");
  };
  slider.addEventListener("input", () => (lrText.value = formatLr(10 ** Number(slider.value))));
  slider.addEventListener("change", () => commit("lr", Number((10 ** Number(slider.value)).toPrecision(4))));
  const typed = () => {
    const v = Number(lrText.value.trim());
    if (!(v > 0) || !Number.isFinite(v)) {
      lrText.classList.add("gw-invalid");
      return;
    }
    lrText.classList.remove("gw-invalid");
    if (v !== model.get("lr")) commit("lr", v);
  };
  lrText.addEventListener("change", typed);
  lrText.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") typed();
  });

  // -- optimizer and its settings --
  const optSelect = el("select", { class: "gw-optimizer", "aria-label": "optimizer" });
  const settingsBox = el("span", "gw-opt-settings");
  const drawOptimizers = () => {
    const names = Object.keys(model.get("optimizer_defaults") || {});
    optSelect.replaceChildren(...names.map((n) => el("option", { value: n }, null, n)));
    optSelect.value = model.get("optimizer");
  };
  optSelect.addEventListener("change", () => commit("optimizer", optSelect.value));
  const drawSettings = () => {
    const defaults = (model.get("optimizer_defaults") || {})[model.get("optimizer")] || {};
    const overrides = model.get("optimizer_settings") || {};
    const items = [];
    for (const [key, def] of Object.entries(defaults)) {
      const ui = SETTING_UI[key] || { label: key };
      const value = key in overrides ? overrides[key] : def;
      const input = ui.bool
        ? el("input", { type: "checkbox", checked: Boolean(value) })
        : el("input", { type: "number", value: String(value), step: ui.step || "any", min: ui.min ?? "", max: ui.max ?? "", class: "gw-num" });
      input.dataset.setting = key;
      input.addEventListener("change", () => {
        const v = ui.bool ? input.checked : Number(input.value);
        if (!ui.bool && !Number.isFinite(v)) return;
        commit("optimizer_settings", { ...(model.get("optimizer_settings") || {}), [key]: v });
      });
      items.push(holding("label", "gw-setting", ui.label, input));
    }
    settingsBox.replaceChildren(...items);
  };

  // -- schedule, steps, live --
  const schedSelect = el("select", { class: "gw-schedule", "aria-label": "learning-rate schedule" });
  for (const [v, t] of Object.entries(constants().schedule_labels)) el("option", { value: v }, schedSelect, t);
  schedSelect.addEventListener("change", () => commit("schedule", schedSelect.value));
  const stepsInput = el("input", { type: "number", min: "1", step: "1", class: "gw-steps gw-num", "aria-label": "steps" });
  stepsInput.addEventListener("change", () => {
    const n = Math.round(Number(stepsInput.value));
    if (n >= 1) commit("total_steps", n);
  });
  const live = el("input", { type: "checkbox", class: "gw-live" });
  live.addEventListener("change", () => commit("live", live.checked));

  // -- buttons --
  const button = (label, action, title) => {
    const b = el("button", { type: "button", class: "gw-btn", textContent: label, title });
    b.dataset.action = action;
    b.addEventListener("click", () => (inCell() && b.dataset.action === "stop" ? interrupt() : send(b.dataset.action)));
    return b;
  };
  // The first run executes inside its cell: the kernel reads no widget message until the
  // cell ends, so "stop" interrupts the kernel (like the notebook's ■) and pause/step wait.
  const inCell = () => model.get("train_state") === "running" && Boolean((model.get("progress") || {}).in_cell);
  const interrupt = () => {
    const kernel = model.widget_manager?.kernel;
    if (kernel && typeof kernel.interrupt === "function") {
      kernel.interrupt().catch((e) => console.warn("gradwidget: could not interrupt the kernel", e));
    } else {
      send("stop"); // no kernel handle here: stops once the cell lets the kernel read it
    }
  };
  const runBtn = button("▶ run", "run", "rerun training from the starting weights");
  const pauseBtn = button("pause", "pause", "pause / resume the run");
  const stepBtn = button("step", "step", "one training step");
  const stopBtn = button("■ stop", "stop", "stop the run");
  const resetBtn = button("↺ reset", "reset", "stop and restore the starting weights");
  const clearBtn = button("clear", "clear", "forget finished runs");
  const findBtn = button("lr find", "lr_find", "learning-rate range test (model restored afterwards)");

  // -- progress --
  const bar = el("progress", { class: "gw-progress", max: 1, value: 0 });
  const progressText = el("span", "gw-progress-text");
  const stateBadge = el("span", "gw-train-state");

  // -- output area (rerun prints, warnings, tracebacks) --
  const output = el("div", "gw-train-output");

  const row1 = holding(
    "div",
    "gw-controls-row",
    holding("label", "gw-field", "lr ", slider, lrText),
    holding("label", "gw-field", "optimizer ", optSelect),
    settingsBox,
  );
  const liveField = holding("label", "gw-field", live, " live lr");
  liveField.title = "change the lr of the running optimizer in place instead of restarting";
  const row2 = holding(
    "div",
    "gw-controls-row",
    holding("label", "gw-field", "schedule ", schedSelect),
    holding("label", "gw-field", "steps ", stepsInput),
    liveField,
    runBtn,
    pauseBtn,
    stepBtn,
    stopBtn,
    resetBtn,
    clearBtn,
    findBtn,
  );
  const row3 = holding("div", "gw-controls-row gw-progress-row", stateBadge, bar, progressText);
  const box = holding("div", "gw-train", row1, row2, row3, output);
  ctx.panels.bottom.appendChild(box);

  const showState = () => {
    const state = model.get("train_state");
    stateBadge.textContent = state;
    stateBadge.dataset.state = state;
    box.dataset.state = state;
    const busy = state === "running" || state === "paused" || state === "scheduled";
    pauseBtn.textContent = state === "paused" ? "resume" : "pause";
    pauseBtn.dataset.action = state === "paused" ? "resume" : "pause";
    const cell = inCell();
    pauseBtn.disabled = !busy || cell;
    stepBtn.disabled = cell;
    pauseBtn.title = cell ? "this run is inside its cell: stop it, or wait for it to end" : "pause / resume the run";
    stopBtn.disabled = !busy;
    stopBtn.title = cell ? "stop the run (interrupts the kernel: the cell ends with KeyboardInterrupt)" : "stop the run";
  };
  const showProgress = () => {
    const p = model.get("progress") || {};
    const total = p.total || 0;
    bar.max = Math.max(total, 1);
    bar.value = p.step || 0;
    if (!total) {
      progressText.textContent = "";
      return;
    }
    const parts = [`step ${p.step}/${total}`];
    if (p.rate) parts.push(`${p.rate.toFixed(p.rate < 10 ? 1 : 0)} steps/s`);
    if (p.status === "running" && p.step < total && p.eta != null) parts.push(`${formatDuration(p.eta)} left`);
    else if (p.status && p.status !== "running") parts.push(p.status);
    if (p.loss != null) parts.push(`loss ${Number(p.loss).toPrecision(4)}`);
    if (p.kind === "lr_find") parts.unshift("lr find");
    progressText.textContent = parts.join(" · ");
  };
  const showOutput = () => {
    const outs = model.get("train_output") || [];
    output.replaceChildren(
      ...outs.map((o) => {
        if (o.output_type === "error") {
          return el("pre", "gw-out-error", null, (o.traceback || []).join("\n") || `${o.ename}: ${o.evalue}`);
        }
        return el("pre", o.name === "stderr" ? "gw-out-stderr" : "gw-out-stdout", null, o.text);
      }),
    );
    output.hidden = outs.length === 0;
    output.scrollTop = output.scrollHeight;
  };
  const showTrainable = () => {
    const trainable = model.get("trainable");
    // A run of a loop that is not ours (a framework's fit) shows its progress and messages,
    // without the settings that could not rerun it.
    const followed = Boolean((model.get("progress") || {}).total) || (model.get("train_output") || []).length > 0;
    // (style, not the hidden attribute: the rows' CSS display would win over it)
    row1.style.display = row2.style.display = trainable ? "" : "none";
    box.hidden = !trainable && !followed;
  };

  const handlers = {
    "change:lr": showLr,
    "change:optimizer": () => {
      optSelect.value = model.get("optimizer");
      drawSettings();
    },
    "change:optimizer_settings": drawSettings,
    "change:optimizer_defaults": () => {
      drawOptimizers();
      drawSettings();
    },
    "change:schedule": () => (schedSelect.value = model.get("schedule")),
    "change:total_steps": () => (stepsInput.value = String(model.get("total_steps"))),
    "change:live": () => (live.checked = model.get("live")),
    "change:train_state": showState,
    "change:progress": () => {
      showTrainable();
      showProgress();
      showState(); // in_cell comes with the progress
    },
    "change:train_output": () => {
      showOutput();
      showTrainable();
    },
    "change:trainable": showTrainable,
  };
  for (const [ev, fn] of Object.entries(handlers)) model.on(ev, fn);
  showLr();
  drawOptimizers();
  drawSettings();
  schedSelect.value = model.get("schedule");
  stepsInput.value = String(model.get("total_steps"));
  live.checked = model.get("live");
  showState();
  showProgress();
  showOutput();
  showTrainable();
  return () => {
    for (const [ev, fn] of Object.entries(handlers)) model.off(ev, fn);
    box.remove();
  };
}
