"""A small DDP training script that publishes its gradients, run by the tests with torchrun:

    torchrun --standalone --nproc_per_node=2 tests/_publish_job.py LOGDIR [STEPS]

Each rank trains the same small model on its own data (gloo on 127.0.0.1, every step sampled
with full statistics, each rank also writing its own statistics) and writes
``LOGDIR/rank<r>.json``: the gradient it stepped with at its last step, the gradient flowing
into the first Linear's output, its losses, and per step the collectives publish() started
and whether the intermediates were sampled.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.optimizer import register_optimizer_step_pre_hook

import gradwidget as gw


def _sampled(pub: gw.Publication) -> int:
    """Samples of the intermediates so far (the tier exists from the first forward on)."""
    return pub.shared.samples if pub.shared is not None else 0


def main(logdir: str, steps: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same starting weights on every rank
    model = DDP(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
    torch.manual_seed(100 + rank)  # each rank its own data: local gradients differ
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    stepped: dict[str, list] = {}
    inter: dict[str, list] = {}

    def spy(optimizer, args, kwargs):  # the gradient this rank steps with
        stepped.update({n: p.grad.tolist() for n, p in model.named_parameters()})

    def keep(module, args, out):
        out.register_hook(lambda g: inter.update(first=g.tolist()))

    register_optimizer_step_pre_hook(spy)
    model.module[0].register_forward_hook(keep)
    pub = gw.publish(model, logdir, every=0, job="ddp", local_stats=True)
    calls: list[str] = []  # collectives started from here on (publish's setup is done)
    for name in ("all_reduce", "broadcast", "broadcast_object_list", "all_gather", "barrier"):
        fn = getattr(dist, name)
        setattr(dist, name, lambda *a, _n=name, _fn=fn, **k: (calls.append(_n), _fn(*a, **k))[1])
    losses, per_step = [], []
    with pub:
        for _ in range(steps):
            before, sampled = len(calls), _sampled(pub)
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            pub.log(loss=loss)
            losses.append(loss.item())
            per_step.append((len(calls) - before, _sampled(pub) > sampled))
            time.sleep(0.03)  # long enough for the notebook to see it running
    out = {"grads": stepped, "losses": losses, "steps": per_step, "inter": inter["first"]}
    (Path(logdir) / f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40)
