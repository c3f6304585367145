"""Bit-depth reduction (feature squeezing), with a BPDA identity backward pass.

Xu, Evans and Qi 2018, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
Networks" (NDSS): quantizing each pixel to ``2**bits`` levels squeezes out small
perturbations. Rounding has a zero gradient almost everywhere, so a plain gradient attack is
blind to it; BPDA with the identity backward (Athalye et al. 2018) is the adaptive attack.

Shapes: ``(N, C, H, W)`` inside ``bounds``, to the same shape.

Example::

    from robustness.defenses import BitDepth, defend
    defended = defend(model, BitDepth(bits=4))
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from robustness.defenses.preprocessing import GradientHandling, Preprocessor, check_int_setting

__all__ = ["BitDepth"]


class BitDepth(Preprocessor):
    """Quantize every pixel to ``2**bits`` evenly spaced levels spanning ``bounds``.

    ``out = low + round((x - low) / (high - low) * (2**bits - 1)) / (2**bits - 1) * (high - low)``,
    so the output takes at most ``2**bits`` distinct values, ``low`` and ``high`` included.

    Gradient: ``bpda`` with the identity surrogate; in ``naive`` mode the gradient of the rounding
    is zero.

    Args:
        bits: bits per pixel, an integer in 1..8.
        bounds: the valid input range, default ``(0, 1)``.

    Example::

        BitDepth(bits=1)(x)    # binarizes x at the middle of the bounds
    """

    gradient: ClassVar[GradientHandling] = "bpda"
    naive_gradient: ClassVar[str] = "zero (rounding)"

    def __init__(self, bits: int = 4, *, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(bounds=bounds)
        self.bits = check_int_setting(bits, "BitDepth bits", 1, 8)

    def settings(self) -> dict[str, Any]:
        return {"bits": self.bits}

    def transform(self, x: Tensor) -> Tensor:
        low, high = self.bounds
        levels = 2**self.bits - 1
        unit = (x.clamp(low, high) - low) / (high - low)
        return (torch.round(unit * levels) / levels * (high - low) + low).clamp(low, high)
