"""Fast Gradient Sign Method (Goodfellow et al. 2015, "Explaining and Harnessing
Adversarial Examples"), and its L2 form, the Fast Gradient Method.

One gradient step of size ``eps`` on the cross-entropy (or margin) loss:

* Linf: ``x + eps * sign(grad)``
* L2:   ``x + eps * grad / ||grad||_2``

then clipped to the bounds. Shapes: ``x`` is ``(N, ...)``, ``y`` is ``(N,)``.

Example::

    from robustness.attacks import FGSM
    adv = FGSM(norm="linf")(model, x, y, eps=0.1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robustness.attacks.base import AttackKind, FixedBudgetAttack
from robustness.attacks.losses import Loss, _check_loss, objective
from robustness.norms import Norm

__all__ = ["FGSM", "gradient_step"]


def gradient_step(x: Tensor, grad: Tensor, size: float | Tensor, norm: Norm) -> Tensor:
    """``x`` moved by ``size`` along the steepest ascent direction of ``grad`` for ``norm``."""
    if norm == "linf":
        return x + size * grad.sign()
    g = grad.flatten(1)
    unit = (g / g.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)).view_as(grad)
    return x + size * unit


@dataclass(frozen=True, kw_only=True)
class FGSM(FixedBudgetAttack):
    """Single-step gradient attack; ``norm`` is ``"linf"`` (FGSM) or ``"l2"`` (FGM)."""

    name: ClassVar[str] = "fgsm"
    kind: ClassVar[AttackKind] = "single-step"
    norm: Norm = "linf"
    loss: Loss = "ce"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_loss(self.loss)

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float,
        bounds: tuple[float, float],
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        x_in = x.clone().requires_grad_(True)
        obj = objective(model(x_in), y, self.loss, target)
        (grad,) = torch.autograd.grad(obj.sum(), x_in)
        return gradient_step(x, grad, eps, self.norm)
