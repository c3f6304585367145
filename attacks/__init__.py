"""Attacks: immutable settings objects called as ``attack(model, x, y, eps=...)``.

Fixed-budget attacks (:class:`FGSM`, :class:`PGD`) run per budget; minimization attacks
(:class:`CarliniWagnerL2`) search the smallest perturbation and answer every budget at once.
"""

from __future__ import annotations

from attacks.apgd import APGD, APGDDLR, APGDT
from attacks.base import Attack, FixedBudgetAttack, MinimizationAttack
from attacks.carlini_wagner import CarliniWagnerL2
from attacks.fgsm import FGSM
from attacks.pgd import PGD
from attacks.square import Square

__all__ = [
    "APGD", "APGDDLR", "APGDT", "Attack", "CarliniWagnerL2", "FGSM", "FixedBudgetAttack", "MinimizationAttack", "PGD", "Square",
]
