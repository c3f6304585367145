"""The settings of adversarial training, validated when built: the fields of :class:`AdversarialTrainer`.

:class:`TrainingSettings` holds the method, its budget and the validation and guard settings,
checks them (:class:`InputError` saying what to change) and derives what a training epoch needs
(:attr:`~TrainingSettings.step_fraction`, :meth:`~TrainingSettings.eps_at`). It lives apart from
:mod:`robustness.defenses.trainer` so that the training epoch (:mod:`robustness.defenses.loops`) and
the per-fit state (:mod:`robustness.defenses.fit_run`) can name the settings they read without
importing the trainer that calls them. Build :class:`robustness.defenses.AdversarialTrainer`, which
adds ``fit`` and ``evaluate``; its docstring describes every field.

Example::

    settings = AdversarialTrainer(method="pgd", eps=0.1, steps=7, eps_warmup_epochs=3)
    settings.eps_at(0), settings.step_fraction        # (0.025, 0.357...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from robustness.defenses.methods import ATTACK_MODES, METHODS, default_step_fraction
from robustness.defenses.training_utils import check_int, check_number
from robustness.errors import InputError
from robustness.norms import NORMS, check_bounds

__all__ = ["TrainingSettings"]


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """The fields of :class:`robustness.defenses.AdversarialTrainer` (documented there), validated when built."""

    method: str
    eps: float
    norm: str = "linf"
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    eps_warmup_epochs: int = 0
    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    eval_steps: int = 10
    eval_samples: int | None = 512
    guard: bool = True
    guard_drop: float = 0.2
    guard_samples: int = 128
    guard_steps: int = 5
    track_clean: bool = False
    attack_mode: str = "eval"

    def __post_init__(self) -> None:
        method = self.method.lower().strip() if isinstance(self.method, str) else self.method
        if method not in METHODS:
            raise InputError(f"unknown training method {self.method!r}: use one of {', '.join(METHODS)}")
        object.__setattr__(self, "method", method)
        if not isinstance(self.norm, str) or self.norm.lower() not in NORMS:
            raise InputError(f"unknown norm {self.norm!r}: use one of {', '.join(NORMS)}")
        object.__setattr__(self, "norm", self.norm.lower())
        object.__setattr__(self, "bounds", check_bounds(self.bounds))
        eps = check_number("eps", self.eps, low=0.0, low_open=True)
        span = self.bounds[1] - self.bounds[0]
        if self.norm == "linf" and eps >= span:
            hint = f" Did you mean {eps:g}/255 = {eps / 255:.4g}?" if eps >= 1 and eps / 255 < span else ""
            raise InputError(
                f"eps={eps:g} is an Linf budget at least as wide as the whole input range {span:g} of bounds "
                f"{self.bounds}: every input could become any image. Budgets are in the units of the bounds "
                f"(pixels in [0, 1] usually).{hint}"
            )
        object.__setattr__(self, "eps", eps)
        check_int("steps", self.steps, 1)
        if self.step_size is not None:
            object.__setattr__(self, "step_size", check_number("step_size", self.step_size, low=0.0, low_open=True))
        object.__setattr__(self, "beta", check_number("beta", self.beta, low=0.0))
        check_int("eps_warmup_epochs", self.eps_warmup_epochs, 0)
        check_int("seed", self.seed, 0)
        check_int("eval_steps", self.eval_steps, 1)
        if self.eval_samples is not None:
            check_int("eval_samples", self.eval_samples, 1)
        if not isinstance(self.guard, bool) or not isinstance(self.track_clean, bool):
            raise InputError("guard and track_clean must be True or False")
        object.__setattr__(self, "guard_drop", check_number("guard_drop", self.guard_drop, low=0.0, high=1.0,
                                                             low_open=True))
        check_int("guard_samples", self.guard_samples, 1)
        check_int("guard_steps", self.guard_steps, 1)
        if self.attack_mode not in ATTACK_MODES:
            raise InputError(f"attack_mode must be one of {', '.join(ATTACK_MODES)}, got {self.attack_mode!r}")

    @property
    def step_fraction(self) -> float:
        """The attack step as a fraction of the (current) budget."""
        return self.step_size if self.step_size is not None else default_step_fraction(self.method, self.steps)

    @property
    def guarded(self) -> bool:
        """Whether the catastrophic-overfitting guard runs (FGSM-RS with ``guard=True``)."""
        return self.method == "fgsm-rs" and self.guard

    def eps_at(self, epoch: int) -> float:
        """The budget of epoch ``epoch`` (0-based), following the linear warm-up."""
        check_int("epoch", epoch, 0)
        if epoch < self.eps_warmup_epochs:
            return self.eps * (epoch + 1) / (self.eps_warmup_epochs + 1)
        return self.eps

    def settings(self) -> dict[str, Any]:
        """The settings as plain values (recorded in checkpoints and histories)."""
        data = asdict(self)
        data["bounds"] = list(self.bounds)
        return data
