"""The Lightning and Hugging Face Trainer callbacks, on real frameworks and real models.

Each checks: the run's losses are what the framework logged, the statistics are the
parameters' ``.grad`` at the optimizer step (after clipping), no hook outlives training
(counted), and an exception inside the training step leaves the widget usable.
"""

from __future__ import annotations

import csv
import os

import pytest
import torch
import torch.nn as nn
from torch.nn.modules import module as nn_module
from torch.optim.optimizer import _global_optimizer_pre_hooks, register_optimizer_step_post_hook
from torch.utils.data import DataLoader, Dataset, TensorDataset

import gradwidget as gw
from gradwidget import _optstep

pl = pytest.importorskip("pytorch_lightning")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded


def hooks(model: nn.Module) -> dict[str, int]:
    """Every kind of hook the watcher or the callbacks could add, counted."""
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    for p in model.parameters():
        n += len(p._backward_hooks or {}) + len(p._post_accumulate_grad_hooks or {})
    return {
        "module": n,
        "global_forward": len(nn_module._global_forward_hooks)
        + len(nn_module._global_forward_pre_hooks),
        "optimizer": len(_global_optimizer_pre_hooks),
        "listeners": _optstep.listening(),
        "modes": torch._C._len_torch_function_stack(),
    }


def grads_at_step(model: nn.Module) -> tuple[dict[str, float], object]:
    """The parameters' ``.grad`` norms the last optimizer step used (by name).

    Read after the step: Lightning computes the gradient inside ``step(closure)``.
    """
    seen: dict[str, float] = {}

    def post(opt, args, kwargs):
        seen.clear()
        seen.update({n: p.grad.norm().item() for n, p in model.named_parameters()})

    return seen, register_optimizer_step_post_hook(post)


# ---- Lightning -------------------------------------------------------------------------
class TwoLayers(pl.LightningModule):
    def __init__(self, fail_at: int | None = None, interrupt: bool = False):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 16), nn.Linear(16, 1)
        self.fail_at, self.interrupt = fail_at, interrupt

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))

    def training_step(self, batch, idx):
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise KeyboardInterrupt if self.interrupt else ValueError("bad batch")
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def lightning(tmp_path, w, **kw) -> pl.Trainer:
    return pl.Trainer(
        max_steps=30,
        callbacks=[w.lightning_callback(every=0)],
        logger=pl.loggers.CSVLogger(tmp_path),
        log_every_n_steps=1,
        gradient_clip_val=0.05,  # clips most steps: the shown gradient is the clipped one
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kw,
    )


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(120, 4, generator=g), torch.randn(120, 1, generator=g))
    return DataLoader(ds, batch_size=8)


def test_lightning_fit_draws_watches_and_streams_the_loss(tmp_path):
    torch.manual_seed(0)
    model, w = TwoLayers(), gw.GradWidget()
    before = hooks(model)
    trainer = lightning(tmp_path, w)
    seen, handle = grads_at_step(model)
    try:
        trainer.fit(model, data())
    finally:
        handle.remove()
    # The graph of the first training step, parameters named by the module.
    leaves = {n.id for n in w.graph.nodes if n.kind == "leaf"}
    assert leaves == {"leaf:l1.weight", "leaf:l1.bias", "leaf:l2.weight", "leaf:l2.bias"}
    assert any(n.op == "MseLossBackward0" for n in w.graph.nodes)
    # The loss run: what Lightning logged, step by step.
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        logged = [float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")]
    run = w.runs[-1]
    assert run["status"] == "done" and run["note"] == "Lightning fit"
    assert run["losses"] == pytest.approx(logged, rel=1e-6) and len(logged) == 30
    assert run["optimizer"] == "SGD" and run["lr"] == 0.5 and run["steps"] == 30
    assert run["metrics"]["train_loss"] == pytest.approx(logged, rel=1e-6)
    # The gradient the optimizer stepped with (after clipping), at the last step.
    stats = w.stats()
    for name, norm in seen.items():
        assert stats[f"leaf:{name}"]["norm"] == pytest.approx(norm, rel=1e-5)
    assert stats["leaf:l1.weight"]["clipped"] is True
    assert w.grad_watch["leaf_samples"] >= 29 and not w.grad_watch["watching"]
    assert hooks(model) == before
    assert "cannot rerun a Lightning fit" in w.train_output[0]["text"]


def test_lightning_mixed_precision_shows_the_unscaled_clipped_gradient(tmp_path):
    """fp16 autocast with a GradScaler (Lightning's plugin, on CPU): Lightning unscales, then
    clips, then the scaler steps; the widget shows what the step used, not the scaled grad."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    torch.manual_seed(0)
    model, w = TwoLayers(), gw.GradWidget()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    trainer = lightning(tmp_path, w, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    seen, handle = grads_at_step(model)
    try:
        trainer.fit(model, data())
    finally:
        handle.remove()
    stats = w.stats()
    for name, norm in seen.items():
        assert stats[f"leaf:{name}"]["norm"] == pytest.approx(norm, rel=1e-5)
    assert w.grad_watch["scale"] == scaler.get_scale() > 1
    assert stats["leaf:l1.weight"]["clipped"] is True


@pytest.mark.parametrize("interrupt", [False, True])
def test_lightning_failure_removes_every_hook_and_keeps_the_widget(tmp_path, interrupt):
    torch.manual_seed(0)
    model, w = TwoLayers(fail_at=5, interrupt=interrupt), gw.GradWidget()
    before = hooks(model)
    # Lightning turns Ctrl+C into a graceful shutdown that exits the process (SystemExit).
    with pytest.raises(SystemExit if interrupt else ValueError):
        lightning(tmp_path, w).fit(model, data())
    assert hooks(model) == before
    run = w.runs[-1]
    assert run["status"] == ("stopped" if interrupt else "error")
    assert len(run["losses"]) == 5
    # Still usable: the next fit is a new run, watched again.
    model.fail_at = None
    lightning(tmp_path, w).fit(model, data())
    assert [r["status"] for r in w.runs] == [run["status"], "done"]
    assert w.stats()["leaf:l2.bias"]["norm"] > 0 and hooks(model) == before


def test_a_widget_drawn_from_the_module_keeps_its_graph(tmp_path):
    torch.manual_seed(0)
    model = TwoLayers()
    w = gw.GradWidget(model, example_input=torch.randn(2, 4))
    graph = w.graph
    lightning(tmp_path, w).fit(model, data())
    assert w.graph is graph and w.stats()["leaf:l1.weight"]["norm"] > 0


def test_bad_callback_keywords_name_what_is_accepted():
    with pytest.raises(TypeError, match="every=, max_overhead= and lint="):
        gw.GradWidget().lightning_callback(evry=0)


# ---- Hugging Face Trainer ------------------------------------------------------------
class Tokens(Dataset):
    def __init__(self, n: int = 80):
        self.x = torch.randint(0, 100, (n, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.x[i]}


def hf_trainer(tmp_path, w, model, steps: int = 20):
    transformers = pytest.importorskip("transformers")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        logging_steps=1,
        learning_rate=1e-3,
        max_grad_norm=1.0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    return transformers.Trainer(
        model=model, args=args, train_dataset=Tokens(), callbacks=[w.hf_callback(every=0)]
    )


def gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16)
    return transformers.GPT2LMHeadModel(config)


def test_hf_trainer_draws_watches_and_streams_the_loss(tmp_path):
    model, w = gpt2(), gw.GradWidget()
    before = hooks(model)
    trainer = hf_trainer(tmp_path, w, model)
    seen, handle = grads_at_step(model)
    try:
        trainer.train()
    finally:
        handle.remove()
    leaves = {n.id for n in w.graph.nodes if n.kind == "leaf"}
    assert "leaf:transformer.h.0.attn.c_attn.weight" in leaves
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    run = w.runs[-1]
    assert run["status"] == "done" and len(logged) == 20
    assert run["losses"] == pytest.approx(logged, rel=1e-6)
    assert run["optimizer"] == "AdamW" and "grad_norm" in run["metrics"]
    stats = w.stats()
    assert len(seen) == 16 and all(f"leaf:{name}" in stats for name in seen)
    for name, norm in seen.items():
        assert stats[f"leaf:{name}"]["norm"] == pytest.approx(norm, rel=1e-4)
    assert hooks(model) == before and "training_step" not in vars(trainer)


def test_hf_failure_removes_every_hook_and_keeps_the_widget(tmp_path):
    model, w = gpt2(), gw.GradWidget()
    before = hooks(model)
    trainer = hf_trainer(tmp_path, w, model, steps=5)
    calls = []
    step = trainer.training_step

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("bad batch")
        return step(*a, **k)

    trainer.training_step = failing
    with pytest.raises(ValueError, match="bad batch"):
        trainer.train()
    assert hooks(model) == before
    assert w.runs[-1]["status"] == "error" and "bad batch" in w.runs[-1]["note"]
    del trainer.training_step
    trainer.train()  # usable again: a second run, watched
    assert w.runs[-1]["status"] == "done" and hooks(model) == before


def test_a_diverging_fit_is_marked_not_stopped(tmp_path):
    class Wild(TwoLayers):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=50.0)

    torch.manual_seed(0)
    model, w = Wild(), gw.GradWidget()
    trainer = pl.Trainer(
        max_steps=30,
        callbacks=[w.lightning_callback()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, data())
    run = w.runs[-1]
    assert run["status"] == "diverged" and trainer.global_step == 30  # the framework's loop
    assert len(run["losses"]) == 30
