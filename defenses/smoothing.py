"""Median smoothing (spatial smoothing), with an exact gradient.

Xu, Evans and Qi 2018, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
Networks": a median filter per channel removes isolated perturbed pixels (salt-and-pepper
noise) while keeping edges.

Gradient: ``exact``. The median of a window is a continuous, piecewise linear function of its
inputs: autograd routes each output's gradient to the input pixel the median selected, which
is the true gradient almost everywhere (ties aside). Unlike rounding or JPEG, it does not hide
the gradient, so no BPDA surrogate is needed, and ``naive`` and ``adaptive`` coincide. (Its
gradient is sparse; an attacker wanting a denser signal can subclass :class:`MedianSmoothing`
with ``gradient = "bpda"`` to use the identity backward instead.)

Shapes: ``(N, C, H, W)`` inside ``bounds``, to the same shape; ``H`` and ``W`` must exceed
``kernel_size // 2`` (reflect padding).

Example::

    from robustness.defenses import MedianSmoothing, defend
    defended = defend(model, MedianSmoothing(kernel_size=3))
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from torch.nn import functional as F

from robustness.defenses.preprocessing import GradientHandling, Preprocessor, check_int_setting
from robustness.errors import InputError

__all__ = ["MedianSmoothing"]


class MedianSmoothing(Preprocessor):
    """Median over each ``kernel_size x kernel_size`` window, per channel, with reflect padding.

    Args:
        kernel_size: the window side, an odd integer >= 3.
        bounds: the valid input range, default ``(0, 1)`` (the median of in-bounds pixels stays in bounds).

    Example::

        MedianSmoothing(kernel_size=3)(x)   # x: (N, C, H, W) -> same shape
    """

    gradient: ClassVar[GradientHandling] = "exact"
    naive_gradient: ClassVar[str] = "exact (autograd through the median)"

    def __init__(self, kernel_size: int = 3, *, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(bounds=bounds)
        k = check_int_setting(kernel_size, "MedianSmoothing kernel_size", 3)
        if k % 2 == 0:
            raise InputError(f"MedianSmoothing kernel_size must be odd (3, 5, 7, ...), got {k}")
        self.kernel_size = k

    def settings(self) -> dict[str, Any]:
        return {"kernel_size": self.kernel_size}

    def transform(self, x: Tensor) -> Tensor:
        k, pad = self.kernel_size, self.kernel_size // 2
        n, c, h, w = x.shape
        if pad >= h or pad >= w:
            raise InputError(
                f"MedianSmoothing(kernel_size={k}) needs images larger than {pad} pixels on each side for "
                f"reflect padding, got {h}x{w}: use a smaller kernel_size"
            )
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        return windows.reshape(n, c, h, w, k * k).median(dim=-1).values
