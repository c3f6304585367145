"""Figures derived from per-sample results: accuracy curves, per class, cumulative over the
attacks, and perturbation sizes of the successful adversarial examples.

Inputs are per-sample tensors over the whole evaluation: ``correct`` (bool, clean prediction
right), ``broken[name]`` (long: index into ``budgets`` of the first budget at which attack
``name`` broke the sample, ``len(budgets)`` for never) and ``size[name]`` (float: norm of the
verified adversarial perturbation, NaN where not broken).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["accuracy_curve", "per_class", "cumulative", "perturbation_stats"]


def accuracy_curve(correct: Tensor, broken: Tensor, epsilons: list[float], budgets: list[float]) -> dict[float, float]:
    """Accuracy at each budget of ``epsilons`` (0 is clean): correct and not broken within it."""
    n = max(int(correct.numel()), 1)
    out: dict[float, float] = {}
    for e in epsilons:
        if e == 0:
            out[e] = int(correct.sum()) / n
        else:
            out[e] = int((correct & (broken > budgets.index(e))).sum()) / n
    return out


def per_class(
    labels: Tensor, correct: Tensor, worst: Tensor, epsilons: list[float], budgets: list[float], num_classes: int
) -> dict[int, dict[str, Any]]:
    """Per true class: ``n`` examples, ``clean`` accuracy and worst-case ``robust`` accuracy per budget.

    Classes without examples are left out (their accuracy is undefined, not zero).
    """
    out: dict[int, dict[str, Any]] = {}
    for c in range(num_classes):
        mask = labels == c
        count = int(mask.sum())
        if count == 0:
            continue
        curve = accuracy_curve(correct[mask], worst[mask], epsilons, budgets)
        out[c] = {"n": count, "clean": curve.get(0.0, int(correct[mask].sum()) / count), "robust": curve}
    return out


def cumulative(
    broken: dict[str, Tensor], correct: Tensor, epsilons: list[float], budgets: list[float]
) -> dict[str, dict[float, float]]:
    """Worst-case accuracy after each attack, in order: attack k counts the first k attacks together."""
    out: dict[str, dict[float, float]] = {}
    so_far: Tensor | None = None
    for name, b in broken.items():
        so_far = b if so_far is None else torch.minimum(so_far, b)
        out[name] = accuracy_curve(correct, so_far, epsilons, budgets)
    return out


def perturbation_stats(
    broken: dict[str, Tensor], size: dict[str, Tensor], budgets: list[float]
) -> dict[str, dict[float, dict[str, float]]]:
    """Per attack and budget: ``count``, ``median`` and ``max`` norm of the successful perturbations.

    A sample counts at budget ``eps`` when the attack broke it within ``eps``; its norm is that of
    the verified adversarial example at the smallest budget that broke it. NaN when none.
    """
    out: dict[str, dict[float, dict[str, float]]] = {}
    for name, b in broken.items():
        per_eps: dict[float, dict[str, float]] = {}
        for i, e in enumerate(budgets):
            sizes = size[name][b <= i]
            if sizes.numel():
                per_eps[e] = {"count": int(sizes.numel()), "median": float(torch.quantile(sizes.double(), 0.5)),
                              "max": float(sizes.max())}
            else:
                per_eps[e] = {"count": 0, "median": math.nan, "max": math.nan}
        out[name] = per_eps
    return out
