"""Decoupled Direction and Norm attack, DDN (Rony, Hafemann, Oliveira, Ben Ayed, Sabourin and
Granger 2019, "Decoupling Direction and Norm for Efficient Gradient-Based L2 Adversarial Attacks
and Defenses", CVPR, https://arxiv.org/abs/1811.09600), as an L2 minimization attack.

DDN moves the direction of the perturbation and its norm separately. At every step ``k``:

* the direction: ``delta <- delta + alpha_k * g / ||g||_2`` with ``g`` the input gradient of the
  cross-entropy of the true label (untargeted; minus the cross-entropy of ``target`` with
  ``target``); a zero gradient is replaced by a random direction drawn from ``generator``;
* the norm: ``eps_k = eps_{k-1} * (1 - gamma)`` where the step's point was adversarial,
  ``eps_{k-1} * (1 + gamma)`` where it was not (``eps_0 = init_epsilon``), never above the
  largest L2 perturbation the bounds allow; ``delta`` is rescaled to norm ``eps_k`` and
  ``x + delta`` clipped to the bounds;
* optional quantization (``levels``; off by default): ``x + delta`` is rounded to ``levels``
  evenly spaced values over the bounds, as for 8-bit images (``levels=256``), before the clip.
  The paper quantizes; Foolbox's ``DDNAttack`` does not. Off by default because the points are
  then not the smallest real-valued ones; turn it on to get adversarial images that survive
  saving as 8-bit files.

``alpha_k`` is cosine-annealed from ``alpha_init = 1`` to ``alpha_final = 0.01`` (the paper's
code and Foolbox); ``gamma = 0.05``, ``init_epsilon = 1`` and ``steps = 100`` as in both.
``alpha`` and ``init_epsilon`` are in units of the bounds' width (``alpha * (high - low)``),
identical to the paper for inputs in ``[0, 1]``.

Result, per sample: the adversarial point of smallest L2 norm evaluated at any step (exactly as
the model saw it), re-checked on the whole batch at the end; ``x`` where none was found. Inputs
the model already misclassifies (or classifies as ``target``) are returned unchanged (norm 0)
and are not attacked. One forward and one backward per step (``eot_samples`` of each with EOT: the
gradient is averaged over the draws, and a step counts as adversarial only when every draw is
fooled).

Shapes: ``x`` is ``(N, ...)`` inside ``bounds``; ``y`` and ``target`` are ``(N,)``; the model
returns logits ``(N, classes)``.

Example::

    from robustness.attacks import DDN
    adv = DDN(steps=100)(model, x, y)                  # smallest L2 adversarials found (x where none)
    adv = DDN()(model, x, y, eps=0.5)                  # only those within L2 0.5
    adv = DDN(levels=256)(model, x, y, target=t)       # targeted, 8-bit quantized points
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustness.attacks.base import L1_ATTACKS, AttackKind
from robustness.attacks.eot import check_eot_samples, eot_gradient
from robustness.attacks.losses import is_adversarial
from robustness.attacks.min_norm import (
    MinNormSearch,
    SmallestAdversarial,
    check_count,
    check_rate,
    cosine_annealed,
    worst_norm,
)
from robustness.errors import InputError
from robustness.norms import Norm, check_norm, clip_to_bounds, norm_of

__all__ = ["DDN"]


@dataclass(frozen=True, kw_only=True)
class DDN(MinNormSearch):
    """Decoupled Direction and Norm (Rony et al. 2019), L2 only.

    Args:
        norm: must be ``"l2"``.
        steps: iterations (one forward and one backward each).
        gamma: the factor by which the norm grows or shrinks per step, in ``(0, 1)``.
        init_epsilon: the first norm, in units of the bounds' width.
        alpha_init: the first gradient step (L2 length, in units of the bounds' width).
        alpha_final: the last one (cosine annealing in between).
        levels: quantize every point to this many values over the bounds (``>= 2``); ``None``
            (the default) does not quantize.
        eot_samples: forward passes each gradient is averaged over (Expectation over
            Transformation, :mod:`robustness.attacks.eot`); 1 for a deterministic model.
    """

    name: ClassVar[str] = "ddn"
    kind: ClassVar[AttackKind] = "minimization"
    norm: Norm = "l2"
    steps: int = 100
    gamma: float = 0.05
    init_epsilon: float = 1.0
    alpha_init: float = 1.0
    alpha_final: float = 0.01
    levels: int | None = None

    def __post_init__(self) -> None:
        norm = check_norm(self.norm)
        if norm != "l2":
            raise InputError(
                f"DDN is an L2 attack and cannot use norm={self.norm!r}: leave norm='l2', or use "
                f"FMN(norm={norm!r}) (registry name 'fmn') for a minimum-norm attack in {norm}"
                + (f" (the attacks that work in l1: {', '.join(L1_ATTACKS)})" if norm == "l1" else "")
            )
        object.__setattr__(self, "norm", norm)
        check_count("DDN", "steps", self.steps, 1)
        check_rate("DDN", "gamma", self.gamma, below_one=True)
        check_rate("DDN", "init_epsilon", self.init_epsilon)
        check_rate("DDN", "alpha_init", self.alpha_init)
        check_rate("DDN", "alpha_final", self.alpha_final)
        if self.levels is not None:
            check_count("DDN", "levels", self.levels, 2)
        check_eot_samples("DDN", self.eot_samples)

    def _minimize(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *,
                  bounds: tuple[float, float], generator: torch.Generator) -> SmallestAdversarial:
        """The DDN iterations on inputs that all start correctly classified."""
        low, high = bounds
        width = high - low
        view = (-1,) + (1,) * (x.dim() - 1)

        def loss(logits: Tensor) -> Tensor:  # raised by the steps
            if target is None:
                return F.cross_entropy(logits, y, reduction="none")
            return -F.cross_entropy(logits, target, reduction="none")

        def fooled(logits: Tensor) -> Tensor:
            return is_adversarial(logits, y, target)

        limit = worst_norm(x, bounds, "l2")
        radius = torch.full_like(limit, self.init_epsilon * width)
        best = SmallestAdversarial.start(x)
        x_adv, delta = x, torch.zeros_like(x)
        for i in range(self.steps):
            alpha = cosine_annealed(self.alpha_init, self.alpha_final, i, self.steps) * width
            draws = eot_gradient(model, x_adv, loss, fooled, samples=self.eot_samples)
            grad = draws.grad
            if grad is None:  # unreachable: eot_gradient returns it when with_grad=True
                raise RuntimeError("eot_gradient returned no gradient")
            with torch.no_grad():
                best.record(x_adv, draws.fooled, norm_of(delta, "l2"))
                size = grad.flatten(1).norm(dim=1)
                noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
                grad = torch.where((size == 0).view(view), noise, grad)
                delta = delta + grad * (alpha / grad.flatten(1).norm(dim=1).clamp_min(1e-12)).view(view)
                radius = torch.where(draws.fooled, radius * (1 - self.gamma), radius * (1 + self.gamma))
                radius = torch.minimum(radius, limit)
                delta = delta * (radius / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(view)
                x_adv = x + delta
                if self.levels is not None:
                    steps = self.levels - 1
                    x_adv = ((x_adv - low) * (steps / width)).round_().mul_(width / steps).add_(low)
                x_adv = clip_to_bounds(x_adv, bounds)
                delta = x_adv - x
        return best
