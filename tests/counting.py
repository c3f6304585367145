"""A model wrapper that counts its forward calls and the samples through them (test instrumentation)."""

from __future__ import annotations

import torch
from torch import nn


class Counting(nn.Module):
    """Forwards to ``model``; ``calls`` counts the forward calls, ``samples`` the inputs through them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.samples += x.shape[0]
        return self.model(x)
