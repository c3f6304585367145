"""Per-sample results as typed rows, and two evaluations compared sample by sample.

:attr:`robustness.Report.per_sample` holds the raw lists (its docstring names every key);
:meth:`robustness.Report.samples` gives them as :class:`SampleResult` rows with budgets as values,
and :func:`compare_samples` says which samples one evaluation breaks and the other does not.

Example::

    a = robustness.evaluate(model, data, attacks=["pgd"], epsilons=[0, 0.1, 0.2])
    b = robustness.evaluate(model, data, attacks=["pgd", "apgd-ce"], epsilons=[0, 0.1, 0.2])
    diff = robustness.compare_samples(a, b, eps=0.1)
    diff.only_b        # indices of the samples robust under a's attacks but not under b's, at 0.1
    a.samples()[diff.only_b[0]].broken_at, b.samples()[diff.only_b[0]].broken_by
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from robustness.errors import InputError

if TYPE_CHECKING:
    from robustness.report import Report

__all__ = ["SampleComparison", "SampleResult", "compare_samples", "sample_rows"]


@dataclass(frozen=True)
class SampleResult:
    """One example's outcome (a row of :meth:`robustness.Report.samples`).

    Attributes:
        index: its position in the data.
        label, clean_prediction: the true class and the clean prediction; ``correct`` when equal
            (only correct samples are attacked).
        broken_at: the smallest listed budget at which an attack broke it (``None``: none did at any
            listed budget), and ``broken_by`` the attack (``""`` when none).
        adversarial_prediction, perturbation: the prediction on that attack's verified adversarial
            input and its norm (``None`` when never broken).
        broken_at_by_attack: each attack's smallest breaking budget (``None``: never).
        distance, distance_by: the smallest verified adversarial distance any attack found and which
            attack (runs with ``epsilons="curve"``; ``0.0`` for a sample misclassified clean, ``inf``
            when never broken; ``None`` without a curve).
    """

    index: int
    label: int
    clean_prediction: int
    correct: bool
    broken_at: float | None
    broken_by: str
    adversarial_prediction: int | None
    perturbation: float | None
    broken_at_by_attack: dict[str, float | None]
    distance: float | None = None
    distance_by: str | None = None

    def robust_at(self, eps: float) -> bool:
        """Classified correctly and not broken within ``eps``: by its distance in a curve run (any
        budget), else by its smallest breaking listed budget (``eps`` should be a listed budget)."""
        if not self.correct:
            return False
        if self.distance is not None:
            return self.distance > eps
        return self.broken_at is None or self.broken_at > eps


def _budgets(report: Report) -> list[float]:
    return sorted(e for e in report.epsilons if e > 0)


def sample_rows(report: Report) -> list[SampleResult]:
    """``report.per_sample`` as :class:`SampleResult` rows, in data order."""
    s = report.per_sample
    if not s:
        return []
    budgets = _budgets(report)
    names = [k.split(":", 1)[1] for k in s if k.startswith("broken_at:") and k != "broken_at:worst"]

    def at(i: int) -> float | None:
        return budgets[i] if i < len(budgets) else None

    rows = []
    for i, (label, pred) in enumerate(zip(s["label"], s["clean_prediction"])):
        broken = s["broken_at:worst"][i] < len(budgets)
        rows.append(SampleResult(
            index=i, label=int(label), clean_prediction=int(pred), correct=label == pred,
            broken_at=at(s["broken_at:worst"][i]), broken_by=s["broken_by"][i],
            adversarial_prediction=int(s["adversarial_prediction"][i]) if broken else None,
            perturbation=s["perturbation"][i] if broken else None,
            broken_at_by_attack={n: at(s[f"broken_at:{n}"][i]) for n in names},
            distance=float(s["distance"][i]) if "distance" in s else None,
            distance_by=s["distance_by"][i] if "distance_by" in s else None,
        ))
    return rows


@dataclass(frozen=True)
class SampleComparison:
    """Which samples two evaluations of the same data find robust at one budget (:func:`compare_samples`).

    ``only_a``: not robust under ``a`` (broken, or misclassified clean) but robust under ``b``;
    ``only_b`` the reverse; ``both``: not robust under either; ``neither``: robust under both.
    Indices into the data, increasing. ``eps``: the budget compared (``None``: every budget each
    evaluation tried).
    """

    eps: float | None
    only_a: list[int]
    only_b: list[int]
    both: list[int]
    neither: list[int]


def compare_samples(a: Report, b: Report, *, eps: float | None = None) -> SampleComparison:
    """Compare two reports of the same data sample by sample: which samples each breaks that the other
    does not, at budget ``eps``.

    ``eps=None`` compares "broken at all": at any listed budget (and, in a curve run, at any
    distance). A given ``eps`` must be a listed budget of each report that has no curve (a curve
    answers any budget). A sample misclassified clean counts as not robust. The reports must hold
    per-sample results of the same labels (same data in the same order), else :class:`InputError`.

    Example::

        diff = compare_samples(report_standard, report_adv_trained, eps=0.3)
        print(len(diff.only_a), "samples broken only in the standard model")
    """
    for name, report in (("a", a), ("b", b)):
        if not report.per_sample:
            raise InputError(f"report {name} holds no per-sample results (a report.json written before they were "
                             "saved): evaluate again")
        if eps is not None and report.curve is None and eps not in report.epsilons:
            raise InputError(f"eps={eps!r} is not a budget of report {name} (its budgets: "
                             f"{', '.join(f'{e:g}' for e in report.epsilons)}) and it has no curve to answer other "
                             "budgets: compare at a listed budget")
    if a.per_sample["label"] != b.per_sample["label"]:
        raise InputError(f"the reports are of different data ({len(a.per_sample['label'])} and "
                         f"{len(b.per_sample['label'])} samples, or other labels in another order): compare "
                         "evaluations of the same data")

    def robust(report: Report) -> list[bool]:
        rows = sample_rows(report)
        if eps is not None:
            return [r.robust_at(eps) for r in rows]
        return [r.correct and r.broken_at is None and (r.distance is None or math.isinf(r.distance)) for r in rows]

    ra, rb = robust(a), robust(b)
    pairs = list(enumerate(zip(ra, rb)))
    return SampleComparison(
        eps=eps,
        only_a=[i for i, (x, y) in pairs if not x and y],
        only_b=[i for i, (x, y) in pairs if x and not y],
        both=[i for i, (x, y) in pairs if not x and not y],
        neither=[i for i, (x, y) in pairs if x and y],
    )
