"""Models the benchmarks share, built without torchvision (one definition for every bench)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    """A CIFAR-style ResNet-14: 3 stages of 2 basic blocks."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        chans, blocks, cin = (16, 32, 64), [], 16
        for i, c in enumerate(chans):
            for j in range(2):
                blocks.append(Block(cin, c, 2 if (i and not j) else 1))
                cin = c
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def encoder(layers: int) -> nn.TransformerEncoder:
    """A TransformerEncoder of ``layers`` layers (d_model 64, 4 heads, no dropout)."""
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


#: The Hugging Face GPT-2 the live-gradient benchmarks use, built from this config (no download).
GPT2_CONFIG = dict(n_layer=4, n_embd=128, n_head=4, vocab_size=1000, n_positions=64)


def gpt2(
    n_layer: int = 4, batch: int = 8, seq: int = 64, seed: int = 0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(model, input_ids, labels)``: ``GPT2LMHeadModel(GPT2Config(**GPT2_CONFIG))``.

    Built from the config alone with the hub offline (nothing is downloaded), default
    dropout and attention implementation, in training mode, weights and the ``batch x seq``
    random tokens seeded by ``seed``. ``labels`` is ``input_ids`` (the model shifts them), so
    one step is ``gpt2_loss(model, x, y).backward()``. With the defaults: 52 parameter
    tensors (the LM head is tied to the token embedding), 0.93 M gradient floats.
    ``n_layer`` overrides the config's (the issue's cheaper variant uses 1).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    # The config's default bos/eos id (50256) is outside the small vocabulary: transformers
    # warns about it, irrelevant for training on random tokens.
    logging.set_verbosity_error()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**{**GPT2_CONFIG, "n_layer": n_layer}))
    model.train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, GPT2_CONFIG["vocab_size"], (batch, seq), generator=gen)
    return model, x, x.clone()


def gpt2_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The language-modelling loss of one batch (what ``loss.backward()`` is called on)."""
    return model(input_ids=x, labels=y).loss


def mlp16() -> nn.Module:
    """The tiny MLP 16->64->64->64->1 of the overhead benchmarks (seeded: the same weights)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 1),
    )
