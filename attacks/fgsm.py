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
from robustness.attacks.eot import check_eot_samples, eot_gradient
from robustness.attacks.losses import Loss, _check_loss, is_adversarial, objective
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
    """Single-step gradient attack; ``norm`` is ``"linf"`` (FGSM) or ``"l2"`` (FGM).

    Args:
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` or ``"margin"``.
        eot_samples: forward passes the gradient is averaged over (Expectation over
            Transformation, :mod:`robustness.attacks.eot`), for randomized models; 1: one pass.
    """

    name: ClassVar[str] = "fgsm"
    kind: ClassVar[AttackKind] = "single-step"
    norm: Norm = "linf"
    loss: Loss = "ce"
    eot_samples: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_loss(self.loss)
        check_eot_samples("FGSM", self.eot_samples)

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
        draws = eot_gradient(model, x, lambda logits: objective(logits, y, self.loss, target),
                             lambda logits: is_adversarial(logits, y, target), samples=self.eot_samples)
        return gradient_step(x, draws.grad, eps, self.norm)  # type: ignore[arg-type]  # with_grad: never None
