"""A model on inputs in [-1, 1], for checking that attacks honour a non-default input range."""

from __future__ import annotations

from torch import Tensor, nn


class Shifted(nn.Module):
    """``base`` (trained on [0, 1]) on inputs in [-1, 1]: a sample ``x`` in [0, 1] becomes
    ``2x - 1`` and is classified exactly as before."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: Tensor) -> Tensor:
        return self.base((x + 1) / 2)
