"""Snapshot of a module's starting point: parameters, buffers and RNG states."""

from __future__ import annotations

import random

import numpy as np
import torch


class Snapshot:
    """Parameters, buffers and RNG states at a starting point; restored in place."""

    def __init__(self, module: torch.nn.Module):
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        self.tensors = {name: t.detach().clone() for name, t in tensors}
        self.torch_rng = torch.get_rng_state()
        self.python_rng = random.getstate()
        self.numpy_rng = np.random.get_state()

    def restore(self, module: torch.nn.Module, seed: int | None = None) -> None:
        """Copy the saved values back into the same tensors (optimizers may hold them)."""
        current = dict(module.named_parameters())
        current.update(module.named_buffers())
        with torch.no_grad():
            for name, saved in self.tensors.items():
                t = current.get(name)
                if t is not None:
                    t.copy_(saved)
        for p in module.parameters():
            p.grad = None
        if seed is None:
            torch.set_rng_state(self.torch_rng)
            random.setstate(self.python_rng)
            np.random.set_state(self.numpy_rng)
        else:
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)

    def equals(self, module: torch.nn.Module) -> bool:
        """True when the module's tensors equal the snapshot (for tests and checks)."""
        current = dict(module.named_parameters())
        current.update(module.named_buffers())
        return all(torch.equal(current[k].detach(), v) for k, v in self.tensors.items())
