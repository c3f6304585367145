"""Building blocks shared by the gradient minimum-norm attacks (:mod:`robustness.attacks.fmn`,
:mod:`robustness.attacks.ddn`): their base class :class:`MinNormSearch` (attack only the inputs
not fooled yet, re-check the result), validation of their settings, the cosine-annealed schedules,
the largest perturbation the bounds allow, the per-sample record of the smallest adversarial
point seen, and the final re-check of that point on the whole batch.

Shapes: inputs ``(N, ...)``; per-sample values ``(N,)``.

Example::

    best = SmallestAdversarial.start(x)
    for i in range(steps):
        alpha = cosine_annealed(1.0, 0.01, i, steps)
        ...                                   # x_adv: the point evaluated at this step
        best.record(x_adv, fooled, norm_of(x_adv - x, "l2"))
    x_out = best.verified(model, x, y, target, samples=1, owner="my attack")
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustness.attacks.base import MinimizationAttack
from robustness.attacks.eot import eot_gradient
from robustness.attacks.losses import is_adversarial
from robustness.errors import InputError
from robustness.norms import Norm, norm_of

__all__ = [
    "MinNormSearch", "SmallestAdversarial", "attack_unbroken", "check_count", "check_rate", "cosine_annealed",
    "dual_norm", "fools", "worst_norm",
]

log = logging.getLogger(__name__)

#: the norm of the gradient that measures a linear model's distance to its boundary in each norm
_DUAL: dict[str, Norm] = {"linf": "l1", "l2": "l2", "l1": "linf"}


def check_count(owner: str, name: str, value: object, minimum: int) -> int:
    """``value`` as an integer ``>= minimum``, else :class:`InputError` naming ``owner.name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{owner} {name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_rate(owner: str, name: str, value: object, *, below_one: bool = False) -> float:
    """``value`` as a finite number ``> 0`` (and ``< 1`` with ``below_one``), else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{owner} {name} must be a finite number > 0, got {value!r}")
    if below_one and value >= 1:
        raise InputError(f"{owner} {name} must be < 1 (a fraction by which the norm bound changes per step), "
                         f"got {value!r}")
    return float(value)


def cosine_annealed(start: float, end: float, step: int, steps: int) -> float:
    """``end + (start - end) * (1 + cos(pi * step / steps)) / 2``: ``start`` at step 0, towards ``end``."""
    return end + (start - end) * (1 + math.cos(math.pi * step / steps)) / 2


def dual_norm(norm: Norm) -> Norm:
    """The dual of ``norm`` (``linf`` <-> ``l1``, ``l2`` <-> ``l2``)."""
    return _DUAL[norm]


def worst_norm(x: Tensor, bounds: tuple[float, float], norm: Norm) -> Tensor:
    """``(N,)``: the largest ``norm`` of a perturbation of ``x`` that stays inside ``bounds``."""
    low, high = bounds
    return norm_of(torch.maximum(x - low, high - x), norm)


@dataclass(eq=False)
class SmallestAdversarial:
    """Per sample, the adversarial point of smallest norm seen so far (``x`` itself while none).

    ``x`` ``(n, ...)``, ``norm`` ``(n,)`` (``inf`` while none), ``found`` ``(n,)`` boolean.
    """

    x: Tensor
    norm: Tensor
    found: Tensor

    @classmethod
    def start(cls, x: Tensor) -> SmallestAdversarial:
        n = x.shape[0]
        return cls(x.clone(), torch.full((n,), math.inf, device=x.device, dtype=x.dtype),
                   torch.zeros(n, dtype=torch.bool, device=x.device))

    def record(self, x_adv: Tensor, fooled: Tensor, norm: Tensor) -> None:
        """Take the evaluated points ``x_adv`` where they fooled the model with a smaller ``norm``."""
        better = fooled & (norm < self.norm)
        self.x = torch.where(better.view((-1,) + (1,) * (x_adv.dim() - 1)), x_adv, self.x)
        self.norm = torch.where(better, norm, self.norm)
        self.found |= fooled

    def verified(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *, samples: int,
                 owner: str) -> Tensor:
        """The recorded points, re-checked on the whole batch (``x`` where a point no longer fools the
        model, e.g. by rounding in another batch composition, or on a new draw of a randomized model)."""
        has = torch.isfinite(self.norm)
        if not bool(has.any()):
            return x.clone()
        keep = has & fools(model, self.x, y, target, samples=samples)
        if log.isEnabledFor(logging.DEBUG):  # the count costs a host sync: only when asked for
            log.debug("%s: %d adversarial points did not fool the model again: returning x for them", owner,
                      int((has & ~keep).sum()))
        return torch.where(keep.view((-1,) + (1,) * (x.dim() - 1)), self.x, x)


def attack_unbroken(
    owner: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    minimize: Callable[[Tensor, Tensor, Tensor | None], SmallestAdversarial],
    *,
    samples: int,
) -> Tensor:
    """Run ``minimize(x, y, target)`` on the inputs that do not fool the model yet, re-check its points on
    the whole batch, and return ``x`` with them in place (the inputs that fool the model already, and
    those without a verified point, unchanged). ``samples``: forward passes per check (EOT)."""
    todo = (~fools(model, x, y, target, samples=samples, owner=owner)).nonzero().squeeze(1)
    log.debug("%s: %d of %d inputs to attack (the others fool the model already)", owner, todo.numel(), x.shape[0])
    if todo.numel() == 0:
        return x.clone()
    tx, ty = x[todo], y[todo]
    tt = None if target is None else target[todo]
    best = minimize(tx, ty, tt)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: adversarial points found for %d of %d inputs", owner, int(best.found.sum()), todo.numel())
    out = x.clone()
    out[todo] = best.verified(model, tx, ty, tt, samples=samples, owner=owner)
    return out


def fools(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *, samples: int,
          owner: str | None = None) -> Tensor:
    """Boolean ``(N,)``: ``x`` fools the model (misclassified, or classified as ``target``) on each of
    ``samples`` forward passes, without gradients. With ``owner``, first checks that the model returns
    logits ``(N, classes)`` (:class:`InputError` naming ``owner`` otherwise)."""

    def nothing(logits: Tensor) -> Tensor:  # eot_gradient's loss, unused: the check runs first
        if owner is not None:
            _check_logits(owner, logits, x.shape[0])
        return logits.new_zeros(logits.shape[0])

    with torch.no_grad():
        draws = eot_gradient(model, x, nothing, lambda z: is_adversarial(z, y, target), samples=samples,
                             with_grad=False)
    return draws.fooled


def _check_logits(owner: str, logits: object, n: int) -> None:
    """The model returned floating-point logits ``(n, classes)``."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"{owner}: the model must return floating-point logits of shape ({n}, classes), got {shape}")



@dataclass(frozen=True, kw_only=True)
class MinNormSearch(MinimizationAttack):
    """Base of the iterative minimum-norm attacks: :meth:`_minimize` runs on the inputs that do not
    fool the model yet (the others are returned unchanged, norm 0) and its smallest adversarial
    points are re-checked on the whole batch (:func:`attack_unbroken`).

    Args:
        eot_samples: forward passes each gradient is averaged over (Expectation over
            Transformation, :mod:`robustness.attacks.eot`); 1 for a deterministic model.
    """

    eot_samples: int = 1

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        bounds: tuple[float, float],
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        def minimize(xs: Tensor, ys: Tensor, ts: Tensor | None) -> SmallestAdversarial:
            return self._minimize(model, xs, ys, ts, bounds=bounds, generator=generator)

        return attack_unbroken(type(self).__name__, model, x, y, target, minimize, samples=self.eot_samples)

    @abstractmethod
    def _minimize(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *,
                  bounds: tuple[float, float], generator: torch.Generator) -> SmallestAdversarial:
        """The attack's iterations on inputs ``x`` that all start correctly classified (or not as ``target``)."""
