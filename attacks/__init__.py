"""Attacks: immutable settings objects called as ``attack(model, x, y, eps=...)``.

Fixed-budget attacks (:class:`FGSM`, :class:`PGD`) run per budget; minimization attacks
(:class:`CarliniWagnerL2`, :class:`FAB`, :class:`FABT`, :class:`FMN`, :class:`DDN`) search the smallest
perturbation and answer every budget at once.
"""

from __future__ import annotations

from robustness.attacks.apgd import APGD, APGDDLR, APGDT
from robustness.attacks.base import Attack, FixedBudgetAttack, MinimizationAttack
from robustness.attacks.carlini_wagner import CarliniWagnerL2
from robustness.attacks.fab import FAB, FABT
from robustness.attacks.ddn import DDN
from robustness.attacks.fgsm import FGSM
from robustness.attacks.fmn import FMN
from robustness.attacks.pgd import PGD
from robustness.attacks.square import Square

__all__ = [
    "APGD", "APGDDLR", "APGDT", "Attack", "CarliniWagnerL2", "DDN", "FAB", "FABT", "FGSM", "FMN", "FixedBudgetAttack",
    "MinimizationAttack", "PGD", "Square",
]
