"""Fast Gradient Sign Method (Goodfellow et al. 2015, "Explaining and Harnessing
Adversarial Examples"), its L2 form, the Fast Gradient Method, and its L1 form.

One gradient step of size ``eps`` on the cross-entropy (or margin) loss, the maximiser of the
loss's linearisation over the ``eps`` ball:

* Linf: ``x + eps * sign(grad)``
* L2:   ``x + eps * grad / ||grad||_2``
* L1:   the maximiser of ``grad . d`` over ``||d||_1 <= eps`` with ``x + d`` inside the bounds
  (:func:`l1_box_vertex`): the coordinates of largest ``|grad|`` move to the bound in the
  direction of their gradient's sign, one after the other, until ``eps`` is spent. Without the
  box this is a single coordinate (the L1 ball's vertex); with it, as many as the budget fills.
  It is the exact L1 counterpart of FGSM, well defined for any ``eps`` (Tramer and Boneh 2019,
  "Adversarial training and robustness for multiple perturbations", Sec. 4, discuss the
  steepest-ascent steps of L1 and why iterative L1 attacks need sparser-than-dense, denser-than-
  one-coordinate steps: :class:`robustness.attacks.PGD` with ``norm="l1"`` takes those).

then clipped to the bounds. Shapes: ``x`` is ``(N, ...)``, ``y`` is ``(N,)``.

Example::

    from robustness.attacks import FGSM
    adv = FGSM(norm="linf")(model, x, y, eps=0.1)
    adv = FGSM(norm="l1")(model, x, y, eps=4.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robustness.attacks.base import AttackKind, FixedBudgetAttack
from robustness.attacks.eot import check_eot_samples, eot_gradient
from robustness.attacks.losses import Loss, _check_loss, is_adversarial, objective
from robustness.errors import InputError
from robustness.norms import Norm

__all__ = ["FGSM", "L1_QUANTILE", "gradient_step", "l1_box_vertex", "movable", "sparse_l1_direction"]

#: the default quantile of ``|grad|`` above which an L1 step moves coordinates (SLIDE's ``q``)
L1_QUANTILE = 0.95


def movable(x: Tensor, grad: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Boolean mask of ``x``'s shape: the coordinates that can still move in the direction of
    ``grad``'s sign inside ``bounds`` (not at the bound it points to; a zero gradient never moves)."""
    tol = 1e-6 * (bounds[1] - bounds[0])
    return ((grad > 0) & (x < bounds[1] - tol)) | ((grad < 0) & (x > bounds[0] + tol))


def sparse_l1_direction(grad: Tensor, fraction: float | Tensor, allowed: Tensor | None = None) -> Tensor:
    """The sparse steepest-ascent direction of L1 attacks, of L1 norm 1 per sample.

    ``sign(grad)`` on the ``k`` coordinates of largest ``|grad|``, divided by their number, zero
    elsewhere, with ``k = D - min(floor((1 - fraction) * D), D - 1)`` of the ``D`` coordinates (at
    least one; ties at the threshold all move). ``allowed`` (boolean, ``grad``'s shape, e.g.
    :func:`movable`) restricts the choice to those coordinates, so that the step is not spent on
    pixels the box stops (Croce and Hein 2021, "Mind the box"); a sample with none gets zero.
    This is SLIDE's step (Tramer and Boneh 2019) for ``fraction = 1 - q``, and l1-APGD's sparse step
    for its adaptive ``fraction``.

    Shapes: ``grad`` ``(N, ...)``; ``fraction`` a float or ``(N,)``.
    """
    g = grad.flatten(1)
    n, dim = g.shape
    if dim == 0 or n == 0:
        return torch.zeros_like(grad)
    score = g.abs()
    if allowed is not None:
        score = score * allowed.flatten(1)
    f = torch.as_tensor(fraction, dtype=g.dtype, device=g.device).expand(n)
    skipped = ((1 - f) * dim).floor().clamp(0, dim - 1).long()  # like the reference: floor((1 - f) D)
    threshold = score.sort(dim=1).values.gather(1, skipped[:, None])
    chosen = (score >= threshold) & (score > 0)
    signs = g.sign() * chosen
    return (signs / chosen.sum(dim=1, keepdim=True).clamp_min(1)).view_as(grad)


def l1_box_vertex(x: Tensor, grad: Tensor, eps: float | Tensor, bounds: tuple[float, float]) -> Tensor:
    """The perturbation ``d`` maximising ``grad . d`` over ``||d||_1 <= eps`` with ``x + d`` inside
    ``bounds`` (a fractional knapsack): the coordinates move to the bound ``sign(grad)`` points to,
    in decreasing order of ``|grad|``, until ``eps`` is spent (the last one partly).

    Shapes: ``x`` and ``grad`` ``(N, ...)``, ``eps`` a float or ``(N,)``; returns ``d``.
    """
    g = grad.flatten(1)
    n, dim = g.shape
    if dim == 0 or n == 0:
        return torch.zeros_like(grad)
    xf = x.flatten(1)
    room = torch.where(g > 0, bounds[1] - xf, xf - bounds[0]).clamp_min(0) * (g != 0)
    order = g.abs().sort(dim=1, descending=True).indices
    room_sorted = room.gather(1, order)
    e = torch.as_tensor(eps, dtype=g.dtype, device=g.device).expand(n)[:, None]
    spent_before = room_sorted.cumsum(dim=1) - room_sorted
    take_sorted = torch.minimum(room_sorted, (e - spent_before).clamp_min(0))
    take = torch.zeros_like(take_sorted).scatter(1, order, take_sorted)
    return (g.sign() * take).view_as(grad)


def gradient_step(x: Tensor, grad: Tensor, size: float | Tensor, norm: Norm, *,
                  l1_quantile: float = L1_QUANTILE, bounds: tuple[float, float] | None = None) -> Tensor:
    """``x`` moved by ``size`` along the steepest ascent direction of ``grad`` for ``norm``.

    L1: :func:`sparse_l1_direction` with ``fraction = 1 - l1_quantile``, among the coordinates that
    can move inside ``bounds`` when they are given (the caller still projects onto the ball and the
    box). ``l1_quantile`` and ``bounds`` do not change Linf and L2 steps.
    """
    if norm == "linf":
        return x + size * grad.sign()
    if norm == "l1":
        allowed = None if bounds is None else movable(x, grad, bounds)
        return x + size * sparse_l1_direction(grad, 1.0 - l1_quantile, allowed)
    g = grad.flatten(1)
    unit = (g / g.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)).view_as(grad)
    return x + size * unit


def check_l1_quantile(owner: str, value: object) -> None:
    """``l1_quantile`` is a number in ``[0, 1)``, else :class:`InputError` saying so."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 <= value < 1):
        raise InputError(f"{owner} l1_quantile must be a number in [0, 1) (0.95: L1 steps move the coordinates "
                         f"with the top 5% of |grad|), got {value!r}")


@dataclass(frozen=True, kw_only=True)
class FGSM(FixedBudgetAttack):
    """Single-step gradient attack; ``norm`` is ``"linf"`` (FGSM), ``"l2"`` (FGM) or ``"l1"``.

    The L1 step is the linearisation's exact maximiser over the ball and the box
    (:func:`l1_box_vertex`), not SLIDE's sparse step of size ``eps``: on the digits CNN of the
    tests (300 test images) it left 42% accuracy at L1 budget 2 and 10% at 4, where a sparse step
    of the top 5% of ``|grad|`` left 54% and 22% (its best quantile; 10% and 20% did worse).

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
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
        grad = draws.grad
        if grad is None:  # unreachable: eot_gradient computes it unless told not to
            raise RuntimeError("FGSM got no gradient")
        if self.norm == "l1":
            return x + l1_box_vertex(x, grad, eps, bounds)
        return gradient_step(x, grad, eps, self.norm)
