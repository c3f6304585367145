"""The robustness curve: robust accuracy against the budget, from each sample's smallest adversarial distance.

A minimization attack (Carlini-Wagner; FMN, DDN, FAB) returns, per sample, the smallest adversarial
perturbation it found. From those distances one run gives the robust accuracy at *every* budget:

    accuracy(eps) = #{samples classified correctly whose distance d > eps} / n

The curve is a right-continuous step function: a sample at distance ``d`` counts as broken at every
budget ``eps >= d`` (an adversarial input of norm ``d`` lies inside the closed ball of radius ``d``),
so the curve drops at ``d`` itself. A sample misclassified clean has distance 0 and never counts
as robust; a sample no attack broke has distance ``inf`` and counts as robust at every budget.

What the curve is, honestly: an *upper bound* on the true robust accuracy, as every attack
result is; a minimization attack spends its effort on the smallest perturbation, not on any one
budget, so at a given budget it can lie above a fixed-budget attack run there. :class:`Curve`
holds, at every listed budget where fixed-budget attacks ran, how far the curve of the
minimization attacks alone lies above their worst case (:attr:`Curve.gap`).

``median_distance`` is a budget-free summary: the median adversarial distance of the samples
classified correctly, a sample never broken counting as infinitely far (so the median is
``inf`` when at least half of them were never broken; ``report.json`` writes it ``null`` with
``median_distance_infinite: true``, standard JSON having no infinity).

Example::

    report = robustness.evaluate(model, (x, y), attacks=["pgd", "cw"], epsilons=["curve", 0, 0.5, 1], norm="l2")
    report.curve.median_distance        # e.g. 0.61
    report.curve.accuracy_at(0.75)      # robust accuracy at any budget, not only the listed ones
    report.curve.breakpoints[:3]        # [(0.12, 0.96), (0.15, 0.95), ...]: (distance, accuracy from there on)
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["Curve", "curve_breakpoints", "median_distance"]


def curve_breakpoints(correct: Tensor, distance: Tensor) -> list[tuple[float, float]]:
    """The exact steps of the curve: each distinct finite distance ``d`` of a correctly classified sample,
    sorted, with the robust accuracy from ``d`` on (at ``d`` itself included: right-continuous).

    ``correct``: ``(n,)`` bool; ``distance``: ``(n,)`` float, ``inf`` where never broken. Accuracy is
    over all ``n`` samples (misclassified ones never count as robust).
    """
    n = int(correct.numel())
    if n == 0:
        return []
    d = distance[correct].double()
    d = d[torch.isfinite(d)]
    if d.numel() == 0:
        return []
    values, counts = torch.unique(d, sorted=True, return_counts=True)
    robust = int(correct.sum()) - torch.cumsum(counts, 0)
    return [(float(v), int(r) / n) for v, r in zip(values.tolist(), robust.tolist())]


def median_distance(correct: Tensor, distance: Tensor) -> float:
    """The median of ``distance`` over the correctly classified samples, ``inf`` counting as infinitely
    far (the mean of the two middle values for an even count; ``inf`` when either is); NaN when no
    sample is classified correctly."""
    d = distance[correct].double().sort().values
    m = int(d.numel())
    if m == 0:
        return math.nan
    lo, hi = float(d[(m - 1) // 2]), float(d[m // 2])
    return math.inf if math.isinf(hi) else (lo + hi) / 2


def _accuracy_at(breakpoints: list[tuple[float, float]], start: float, eps: float) -> float:
    """The step function of ``breakpoints`` at ``eps`` (``start`` before the first step)."""
    i = bisect.bisect_right([d for d, _ in breakpoints], eps)
    return start if i == 0 else breakpoints[i - 1][1]


@dataclass(frozen=True)
class Curve:
    """The robustness curve of an evaluation run with ``epsilons="curve"`` (``Report.curve``).

    Attributes:
        clean_accuracy: the curve at budget 0 (samples classified correctly, over all ``n``).
        breakpoints: ``(distance, accuracy)`` pairs, distances increasing: the accuracy from that
            distance on, over every attack (minimization and fixed-budget alike: each verified
            adversarial perturbation counts as a distance found).
        median_distance: median adversarial distance of the correctly classified samples
            (``inf`` when at least half were never broken; NaN when none is correct).
        never_broken: correctly classified samples that no attack broke at any distance.
        minimization: the same steps from the minimization attacks alone.
        minimization_median: their median distance.
        minimization_attacks: the names of the minimization attacks.
        gap: at each listed budget above 0 where fixed-budget attacks ran, ``{"minimization": ..,
            "fixed_budget": .., "gap": ..}``: the minimization attacks' curve there, the worst case over
            the fixed-budget attacks there, and how far the former lies above the latter (``gap > 0``:
            the minimization attacks missed samples a fixed-budget attack broke at that budget).
        n_examples: the samples the accuracies are over.
    """

    clean_accuracy: float
    breakpoints: list[tuple[float, float]]
    median_distance: float
    never_broken: int
    minimization: list[tuple[float, float]]
    minimization_median: float
    minimization_attacks: list[str]
    gap: dict[float, dict[str, float]] = field(default_factory=dict)
    n_examples: int = 0

    def accuracy_at(self, eps: float) -> float:
        """Robust accuracy at budget ``eps`` over every attack (the step curve, right-continuous)."""
        return _accuracy_at(self.breakpoints, self.clean_accuracy, eps)

    def minimization_at(self, eps: float) -> float:
        """Robust accuracy at ``eps`` from the minimization attacks alone."""
        return _accuracy_at(self.minimization, self.clean_accuracy, eps)

    @property
    def largest_gap(self) -> float:
        """The largest :attr:`gap` over the listed budgets (NaN when none was measured)."""
        return max((g["gap"] for g in self.gap.values()), default=math.nan)

    @classmethod
    def measure(cls, correct: Tensor, distance: dict[str, Tensor], minimizing: list[str],
                fixed_worst: dict[float, float]) -> Curve:
        """The curve of per-attack ``distance`` (``inf`` where an attack found none) over the samples
        ``correct`` classifies right; ``minimizing`` names the minimization attacks and ``fixed_worst``
        holds the fixed-budget attacks' worst-case accuracy at each listed budget above 0 they ran at."""
        n = int(correct.numel())
        inf = torch.full(correct.shape, math.inf, dtype=torch.float64)
        overall = torch.stack([inf, *(d.double() for d in distance.values())]).min(dim=0).values
        minimal = torch.stack([inf, *(distance[k].double() for k in minimizing)]).min(dim=0).values
        clean = int(correct.sum()) / max(n, 1)
        steps = curve_breakpoints(correct, minimal)
        gap = {}
        for eps, fixed in sorted(fixed_worst.items()):
            at = _accuracy_at(steps, clean, eps)
            gap[eps] = {"minimization": at, "fixed_budget": fixed, "gap": at - fixed}
        return cls(
            clean_accuracy=clean, breakpoints=curve_breakpoints(correct, overall),
            median_distance=median_distance(correct, overall),
            never_broken=int((correct & torch.isinf(overall)).sum()), minimization=steps,
            minimization_median=median_distance(correct, minimal), minimization_attacks=list(minimizing),
            gap=gap, n_examples=n,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: breakpoints as ``[distance, accuracy]`` pairs, budgets as exact float strings,
        an infinite median as ``null`` with ``median_distance_infinite: true`` (JSON has no infinity)."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "breakpoints": [[d, a] for d, a in self.breakpoints],
            "median_distance": None if math.isinf(self.median_distance) else self.median_distance,
            "median_distance_infinite": math.isinf(self.median_distance),
            "never_broken": self.never_broken,
            "minimization": [[d, a] for d, a in self.minimization],
            "minimization_median": None if math.isinf(self.minimization_median) else self.minimization_median,
            "minimization_median_infinite": math.isinf(self.minimization_median),
            "minimization_attacks": list(self.minimization_attacks),
            "gap": {repr(float(e)): dict(g) for e, g in self.gap.items()},
            "n_examples": self.n_examples,
            "explanation": ("breakpoints: [distance, robust accuracy from that distance on]; a sample at "
                            "distance d is broken at every budget >= d. median_distance: over the correctly "
                            "classified samples, a sample never broken counting as infinitely far (null with "
                            "median_distance_infinite=true when at least half were never broken; null alone when "
                            "no sample is classified correctly). gap: the minimization attacks' curve minus the "
                            "fixed-budget attacks' worst case at each listed budget"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Curve | None:
        """Read :meth:`to_dict`'s output back (``None`` stays ``None``)."""
        if data is None:
            return None

        def median(value: Any, infinite: bool) -> float:
            return math.inf if infinite else (math.nan if value is None else float(value))

        return cls(
            clean_accuracy=float(data["clean_accuracy"]),
            breakpoints=[(float(d), float(a)) for d, a in data["breakpoints"]],
            median_distance=median(data["median_distance"], data.get("median_distance_infinite", False)),
            never_broken=int(data["never_broken"]),
            minimization=[(float(d), float(a)) for d, a in data["minimization"]],
            minimization_median=median(data["minimization_median"], data.get("minimization_median_infinite", False)),
            minimization_attacks=list(data["minimization_attacks"]),
            gap={float(e): {k: float(v) for k, v in g.items()} for e, g in data.get("gap", {}).items()},
            n_examples=int(data.get("n_examples", 0)),
        )
