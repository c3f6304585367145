"""Base classes of every attack: immutable settings, and the invariants enforced once.

An attack is a frozen, keyword-only dataclass validated when it is built. The model,
inputs, labels and budget are call arguments::

    adv = PGD(steps=20)(model, x, y, eps=8 / 255)

Two families:

* :class:`FixedBudgetAttack` (FGSM, PGD): needs ``eps``; its result is projected onto the
  ``eps`` ball and clipped to the bounds here, whatever the subclass returned.
* :class:`MinimizationAttack` (Carlini-Wagner): searches the smallest adversarial
  perturbation. Without ``eps`` it returns, per sample, the smallest adversarial input it
  found (the input itself where it found none); with ``eps`` it returns that input where its
  perturbation is within ``eps`` and the clean input elsewhere.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robustness.errors import InputError
from robustness.norms import Norm, check_bounds, check_norm, clip_to_bounds, norm_of, project

__all__ = ["Attack", "FixedBudgetAttack", "MinimizationAttack", "default_generator"]


def default_generator(device: torch.device, seed: int = 0) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: attacks are reproducible by default."""
    return torch.Generator(device=device).manual_seed(seed)


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise InputError(f"eps must be a number, got {eps!r}")
    value = float(eps)
    if not math.isfinite(value) or value < 0:
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class Attack(ABC):
    """Common validation of call arguments; subclasses implement :meth:`_run`."""

    name: ClassVar[str] = "attack"
    minimizes: ClassVar[bool] = False
    #: the attack works on images ``(N, C, H, W)`` only (e.g. Square); others take any ``(N, ...)``
    needs_images: ClassVar[bool] = False
    norm: Norm  # every subclass declares it as a field or a class constant

    def _validate_call(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, bounds: tuple[float, float]
    ) -> tuple[float, float]:
        if not isinstance(model, nn.Module) and not callable(model):
            raise InputError(f"model must be an nn.Module (or callable) returning logits, got {type(model).__name__}")
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise InputError("x must be a floating-point tensor of shape (N, ...) in pixel space")
        if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
            raise InputError(f"y must be an integer label tensor of shape ({x.shape[0]},)")
        if target is not None and (not isinstance(target, Tensor) or target.shape != y.shape):
            raise InputError(f"target must be an integer label tensor of shape ({x.shape[0]},) like y")
        return check_bounds(bounds)

    @abstractmethod
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, **kwargs: object) -> Tensor: ...

    @property
    def label(self) -> str:
        """The name reports use for this attack (the registry name by default)."""
        return type(self).name

    def describe(self) -> str:
        """Short human-readable summary, used in reports."""
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({fields})"


@dataclass(frozen=True, kw_only=True)
class FixedBudgetAttack(Attack):
    """An attack run at one budget ``eps`` at a time.

    Subclasses that can start from a given point set ``uses_init = True`` and accept an
    ``init`` keyword in :meth:`_run`; others never receive it.
    """

    uses_init: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", check_norm(self.norm))

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float,
        bounds: tuple[float, float] = (0.0, 1.0),
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        init: Tensor | None = None,
    ) -> Tensor:
        """Adversarial inputs of ``x``'s shape, within ``eps`` (in ``self.norm``) and ``bounds``.

        Args:
            model: classifier returning logits ``(N, classes)`` for pixel-space inputs.
            x: inputs ``(N, ...)`` inside ``bounds``.
            y: true labels ``(N,)``.
            eps: the budget; 0 returns ``x``.
            bounds: the valid input range.
            target: labels to reach (targeted attack); ``None`` for untargeted.
            generator: randomness; defaults to a generator seeded with 0 on ``x``'s device.
            init: a starting point of ``x``'s shape (e.g. the best point found at a smaller
                budget), projected into the ball; iterative attacks start their first run
                there instead of at a random point, single-step attacks ignore it.
        """
        bounds = self._validate_call(model, x, y, target, bounds)
        eps = _check_eps(eps)
        if init is not None:
            if not isinstance(init, Tensor) or init.shape != x.shape:
                raise InputError(f"init must be a tensor of x's shape {tuple(x.shape)}")
            init = clip_to_bounds(project(init.detach().to(x.dtype), x.detach(), eps, self.norm), bounds)
        x = x.detach()
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        if generator is None:
            generator = default_generator(x.device)
        with torch.enable_grad():
            extra = {"init": init} if init is not None and self.uses_init else {}
            x_adv = self._run(model, x, y, eps=eps, bounds=bounds, target=target, generator=generator, **extra)
        return clip_to_bounds(project(x_adv.detach(), x, eps, self.norm), bounds)

    @abstractmethod
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
    ) -> Tensor: ...


@dataclass(frozen=True, kw_only=True)
class MinimizationAttack(Attack):
    """An attack that searches the smallest adversarial perturbation, answering every budget at once."""

    minimizes: ClassVar[bool] = True

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Smallest adversarial inputs found (``x`` where none); with ``eps``, only those within it."""
        bounds = self._validate_call(model, x, y, target, bounds)
        x = x.detach()
        if x.shape[0] == 0:
            return x.clone()
        if generator is None:
            generator = default_generator(x.device)
        with torch.enable_grad():
            x_adv = clip_to_bounds(
                self._run(model, x, y, bounds=bounds, target=target, generator=generator).detach(), bounds
            )
        if eps is not None:
            eps = _check_eps(eps)
            within = norm_of(x_adv - x, self.norm) <= eps
            x_adv = torch.where(within.view((-1,) + (1,) * (x.dim() - 1)), x_adv, x)
        return x_adv

    @abstractmethod
    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        bounds: tuple[float, float],
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor: ...
