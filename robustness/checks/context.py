"""What every sanity check sees: the subset, the sweep's findings on it, and the evaluation's settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustness.attacks.base import Attack, AttackKind, kind_of
from robustness.norms import box_diameter
from robustness.report import Check
from robustness.seeding import derive_seed

__all__ = ["CheckContext", "count"]


@dataclass
class CheckContext:
    """The subset of the evaluation (``x``, ``y``, clean ``correct``), what each attack found on it
    (``broken_at``), the report's curves and the settings; ``verdict`` turns a finding into a
    :class:`Check` (a warning, or a failure under ``strict``)."""

    model: nn.Module
    x: Tensor
    y: Tensor
    correct: Tensor
    attacks: dict[str, Attack]
    broken_at: dict[str, Tensor]
    budgets: list[float]
    robust_accuracy: dict[float, float]
    by_attack: dict[str, dict[float, float]]
    norm: str
    bounds: tuple[float, float]
    num_classes: int
    seed: int
    strict: bool
    draws: int = 1  # forward passes a fresh adversarial input must fool (RANDOM_DRAWS when randomized)
    cascade: bool = False  # each attack ran only on the samples the earlier ones left robust

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def generator(self, check: int) -> torch.Generator:
        return torch.Generator(device=self.x.device).manual_seed(derive_seed(self.seed, "check", check))

    def fooled(self, x_adv: Tensor, y: Tensor) -> Tensor:
        """Misclassified in every one of ``draws`` forward passes (a non-finite input never counts)."""
        out = torch.isfinite(x_adv).flatten(1).all(dim=1)
        with torch.no_grad():
            for _ in range(self.draws):
                out &= self.model(x_adv).argmax(dim=1) != y
        return out

    def verdict(self, name: str, ok: bool, message: str) -> Check:
        return Check(name, "passed" if ok else ("failed" if self.strict else "warning"), message)

    def noise_note(self) -> str:
        """For per-sample comparisons of the sweep's results: a randomized model makes them noisy."""
        return ("" if self.draws == 1 else ". The model is randomized and the sweep's predictions are single "
                "draws, so part of this may be noise; raise eot_samples and re-evaluate")

    def full_range(self) -> float:
        """The budget whose ball holds the whole input box around any input (its diameter in the norm)."""
        return box_diameter(self.norm, self.bounds[1] - self.bounds[0], self.x[0].numel())  # type: ignore[arg-type]

    def kinds(self) -> dict[str, AttackKind]:
        """Each attack's declared kind; an attack that declares none raises
        (:func:`robustness.attacks.base.kind_of`), so the check is reported skipped with the reason."""
        return {name: kind_of(attack) for name, attack in self.attacks.items()}

    def first_break(self, names: list[str]) -> Tensor:
        """Per sample, the first budget index at which any of ``names`` broke it."""
        return torch.stack([self.broken_at[k] for k in names]).amin(dim=0)


def count(mask: Tensor) -> int:
    return int(mask.sum())
