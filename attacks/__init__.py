"""Attacks: immutable settings objects called as ``attack(model, x, y, eps=...)``."""

from __future__ import annotations

from attacks.base import Attack, FixedBudgetAttack, MinimizationAttack
from attacks.fgsm import FGSM

__all__ = ["Attack", "FixedBudgetAttack", "MinimizationAttack", "FGSM"]
