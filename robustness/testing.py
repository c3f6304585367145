"""Assertion helpers for robustness tests: evaluate, then fail with the report in the message.

* :func:`assert_robust` gates on the per-sample worst-case robust accuracy over the attacks
  at the largest budget (Carlini et al. 2019, "On Evaluating Adversarial Robustness": report
  the worst case per sample, never the best attack's mean), and under ``strict=True`` also
  on the sanity checks of the evaluation (``Report.checks``).
* :func:`assert_attack_succeeds` gates on the fraction of clean-correct samples an attack
  breaks: for tests that an attack works, or that a model's known weakness is detected.

Both run :func:`robustness.evaluate` (inputs ``(N, ...)`` in pixel space within ``bounds``,
the model returning logits ``(N, classes)``), return its :class:`~robustness.report.Report`
when the gate holds, and otherwise raise :class:`RobustnessAssertionError`, an
``AssertionError`` whose message holds what failed, the threshold, the measured value, the
report's table and the checks that did not pass, so it reads well with or without pytest's
assertion rewriting.

Example::

    from robustness.testing import assert_robust

    def test_digits_model_is_robust(model, x_test, y_test):
        assert_robust(model, (x_test, y_test), eps=[0.05, 0.1], min_accuracy=0.8)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from robustness import runner
from robustness.config import make_config
from robustness.data import DataLike
from robustness.errors import InputError
from robustness.report import Report, format_eps

__all__ = [
    "RobustnessAssertionError",
    "assert_attack_succeeds",
    "assert_robust",
    "robust_fraction",
    "success_rate",
    "verify_robust",
]

log = logging.getLogger(__name__)

AttacksLike = Union[str, Any, Sequence[Any]]  # noqa: UP007  (a runtime alias: as the runner's)
_RESERVED = ("epsilons",)  # evaluate() arguments these helpers take under another name


class RobustnessAssertionError(AssertionError):
    """A robustness gate did not hold.

    Attributes:
        report: the evaluation that failed the gate (``None`` when there was none).
        measured: the value compared with the threshold (a fraction in [0, 1], or ``None``
            when it could not be measured).
        threshold: the required minimum (``None`` for a failure of the checks alone).
        reasons: one line per reason the gate failed.
    """

    def __init__(
        self,
        message: str,
        *,
        report: Report | None = None,
        measured: float | None = None,
        threshold: float | None = None,
        reasons: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.report = report
        self.measured = measured
        self.threshold = threshold
        self.reasons = list(reasons)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a fraction in [0, 1] (0.8 means 80%), got {value!r}")
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        hint = f": did you mean {v / 100:g}?" if 1.0 < v <= 100.0 else ""
        raise InputError(f"{name} must be a fraction in [0, 1] (0.8 means 80%), got {value!r}{hint}")
    return v


def _budgets(eps: Sequence[float] | float) -> list[float]:
    if eps is None:
        raise InputError("eps is required: give a budget such as eps=0.1, or a list eps=[0.05, 0.1]")
    return runner.check_epsilons(eps)


def _evaluate(model: nn.Module, data: DataLike, *, caller: str, strict: bool, settings: dict[str, Any],
              evaluate_kwargs: dict[str, Any]) -> Report:
    """:func:`robustness.evaluate` with one :class:`~robustness.config.EvalConfig` of the helper's
    ``settings`` and the user's ``evaluate_kwargs`` (``progress`` off unless they turn it on)."""
    for key in _RESERVED:
        if key in evaluate_kwargs:
            raise InputError(f"pass the budgets as eps=..., not {key}=...")
    if not isinstance(strict, bool):
        raise InputError(f"strict must be True or False, got {strict!r}")
    twice = sorted(set(evaluate_kwargs) & set(settings))  # assert_attack_succeeds(attack=..., attacks=...)
    if twice:
        raise TypeError(f"{caller}() got multiple values for the setting {twice[0]!r}")
    config = make_config(None, {"progress": False, **evaluate_kwargs, **settings, "strict": strict}, caller=caller)
    return runner.evaluate(model, data, config=config)


def _unpassed_checks(report: Report) -> list[str]:
    return [f"{c.name} [{c.status}]: {c.message}" for c in report.checks if c.status not in ("passed", "skipped")]


def _message(title: str, reasons: list[str], report: Report) -> str:
    attacks = ", ".join(report.by_attack) or "none"
    lines = [f"{title}:"] + [f"  - {r}" for r in reasons]
    lines += [
        f"evaluation: {report.n_examples} examples, clean accuracy {_pct(report.clean_accuracy)}, "
        f"norm {report.norm}, attacks {attacks}, seed {report.seed}, device {report.device}",
        "",
        report.table(),
    ]
    unpassed = _unpassed_checks(report)
    if unpassed:
        lines += ["", "checks that did not pass:"] + [f"  - {c}" for c in unpassed]
    if report.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in report.warnings]
    return "\n".join(lines)


def _strict_reason(report: Report) -> str:
    bad = [c for c in report.checks if c.status not in ("passed", "skipped")]
    names = ", ".join(f"{c.name} ({c.status})" for c in bad)
    return f"strict mode: {len(bad)} sanity check{'s' if len(bad) != 1 else ''} did not pass: {names}"


def _fail_on(reasons: list[str], report: Report, strict: bool, title: str, measured: float,
             threshold: float | None) -> None:
    """Raise :class:`RobustnessAssertionError` with ``reasons`` (plus the failed checks under ``strict``), if any."""
    __tracebackhide__ = True  # pytest shows the user's call, not this frame and its long Report(...) argument
    if strict and not report.checks_passed:
        reasons.append(_strict_reason(report))
    if reasons:
        raise RobustnessAssertionError(
            _message(title, reasons, report), report=report, measured=measured, threshold=threshold, reasons=reasons,
        )


def verify_robust(
    report: Report,
    *,
    min_accuracy: float | None = None,
    strict: bool = False,
    title: str = "robustness assertion failed",
) -> Report:
    """Apply the gate of :func:`assert_robust` to an existing report.

    Fails when the worst-case robust accuracy at the largest budget is below
    ``min_accuracy`` (skipped when ``None``), or, when ``strict``, when any check ended in
    ``warning`` or ``failed``. Returns ``report`` when the gate holds.
    """
    __tracebackhide__ = True
    threshold = None if min_accuracy is None else _fraction(min_accuracy, "min_accuracy")
    eps = max(report.robust_accuracy)
    measured = robust_fraction(report, eps)
    reasons = []
    if threshold is not None and measured < threshold:
        reasons.append(
            f"worst-case robust accuracy {_pct(measured)} ({measured:.4g}) at {report.norm} "
            f"eps={format_eps(eps)} is below min_accuracy={threshold:g} ({_pct(threshold)})"
        )
    _fail_on(reasons, report, strict, title, measured, threshold)
    log.info("robust accuracy %.4g at %s eps=%s (min %s)", measured, report.norm, format_eps(eps), threshold)
    return report


def assert_robust(
    model: nn.Module,
    data: DataLike,
    *,
    eps: Sequence[float] | float,
    min_accuracy: float,
    attacks: AttacksLike = "smoke",
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    device: str | torch.device | None = None,
    strict: bool = False,
    **evaluate_kwargs: Any,
) -> Report:
    """Evaluate ``model`` and fail unless its worst-case robust accuracy reaches ``min_accuracy``.

    Args:
        model: an ``nn.Module`` mapping pixel-space inputs ``(N, ...)`` to logits ``(N, classes)``.
        data: an ``(x, y)`` pair, a ``Dataset`` or a ``DataLoader`` (as :func:`robustness.evaluate`).
        eps: one budget or a list; the gate is at the largest (0 gates clean accuracy).
        min_accuracy: the required worst-case robust accuracy, a fraction in [0, 1].
        attacks: attack objects, registry names or a preset (``"smoke"``: FGSM and PGD-10, fast
            and not a robustness claim; ``"standard"``: AutoAttack's standard version, APGD-CE, APGD-T, FAB-T
            and Square, cascaded; ``"standard-nofab"`` without FAB-T).
        norm, bounds, seed, device: as :func:`robustness.evaluate`.
        strict: also fail when a sanity check of the evaluation warns or fails.
        **evaluate_kwargs: passed on to :func:`robustness.evaluate` (``batch_size``,
            ``gradient_mode``, ``checks``, ...); ``progress`` defaults to ``False``.

    Returns:
        The :class:`~robustness.report.Report`, when the gate holds.

    Raises:
        RobustnessAssertionError: the gate failed; the message holds the report's table.
        InputError: an argument is invalid.

    Example::

        report = assert_robust(model, (x, y), eps=[0.05, 0.1], min_accuracy=0.8, attacks="smoke")
    """
    __tracebackhide__ = True
    threshold = _fraction(min_accuracy, "min_accuracy")
    settings = dict(attacks=attacks, epsilons=_budgets(eps), norm=norm, bounds=bounds, seed=seed, device=device)
    report = _evaluate(model, data, caller="assert_robust", strict=strict, settings=settings,
                       evaluate_kwargs=evaluate_kwargs)
    return verify_robust(report, min_accuracy=threshold, strict=strict, title="assert_robust failed")


def _counts(report: Report, eps: float) -> tuple[int, int, int] | None:
    """``(correct, broken, n)`` at ``eps`` from the per-sample record, or ``None`` without one."""
    samples = report.per_sample
    if not all(k in samples for k in ("label", "clean_prediction", "broken_at:worst")):
        return None
    budgets = [e for e in report.epsilons if e > 0]
    index = budgets.index(eps) if eps in budgets else -1  # eps 0: nothing is broken
    correct = [lab == pred for lab, pred in zip(samples["label"], samples["clean_prediction"], strict=True)]
    n_broken = sum(1 for ok, b in zip(correct, samples["broken_at:worst"], strict=True) if ok and b <= index)
    return sum(correct), n_broken, len(correct)


def robust_fraction(report: Report, eps: float | None = None) -> float:
    """Worst-case robust accuracy at ``eps`` (default: the largest budget), exact from the counts.

    The report's accuracies are float32 means (7 of 10 reads 0.69999999); a gate compares
    ``robust / n`` computed here in float64, so ``min_accuracy=0.7`` holds for 7 of 10.
    """
    eps = max(report.robust_accuracy) if eps is None else float(eps)
    counts = _counts(report, eps)
    if counts is None:
        return report.robust_accuracy[eps]
    n_correct, n_broken, n = counts
    return (n_correct - n_broken) / n if n else 0.0


def success_rate(report: Report, eps: float | None = None) -> tuple[float | None, int, int]:
    """``(rate, broken, correct)``: the fraction of clean-correct samples broken within ``eps``.

    ``eps`` defaults to the largest budget; ``rate`` is ``None`` when no sample is
    classified correctly clean. Counts come from the report's per-sample record, else
    from its accuracies.
    """
    eps = max(report.robust_accuracy) if eps is None else float(eps)
    counts = _counts(report, eps)
    if counts is not None:
        n_correct, n_broken, _ = counts
    else:
        n_correct = round(report.clean_accuracy * report.n_examples)
        n_broken = n_correct - round(report.robust_accuracy[eps] * report.n_examples)
    return (n_broken / n_correct if n_correct else None), n_broken, n_correct


def assert_attack_succeeds(
    model: nn.Module,
    data: DataLike,
    *,
    attack: AttacksLike,
    eps: Sequence[float] | float,
    min_success_rate: float,
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    device: str | torch.device | None = None,
    strict: bool = False,
    **evaluate_kwargs: Any,
) -> Report:
    """Fail unless ``attack`` breaks at least ``min_success_rate`` of the clean-correct samples.

    The success rate is measured at the largest budget in ``eps`` and counts only samples
    the model classifies correctly without attack (a misclassified sample is not the
    attack's doing); with several attacks, a sample counts as broken when any of them broke
    it. For tests that an attack works, or that a model's known weakness is detected.

    Args:
        attack: an attack object, a registry name, a preset, or a list of them.
        eps: one budget or a list; the largest must be > 0.
        min_success_rate: the required fraction of clean-correct samples broken, in [0, 1].
        Others: as :func:`assert_robust`.

    Raises:
        RobustnessAssertionError: the attack broke too few samples, or none was classified
            correctly clean (so success cannot be measured), or ``strict`` and a check did
            not pass.
        InputError: an argument is invalid.

    Example::

        assert_attack_succeeds(undefended, (x, y), attack="pgd", eps=0.3, min_success_rate=0.9)
    """
    __tracebackhide__ = True
    threshold = _fraction(min_success_rate, "min_success_rate")
    budgets = _budgets(eps)
    if budgets[-1] <= 0:
        raise InputError(f"eps must include a budget > 0 for an attack to succeed, got {eps!r}")
    settings = dict(attacks=attack, epsilons=budgets, norm=norm, bounds=bounds, seed=seed, device=device)
    report = _evaluate(model, data, caller="assert_attack_succeeds", strict=strict, settings=settings,
                       evaluate_kwargs=evaluate_kwargs)
    rate, n_broken, n_correct = success_rate(report)
    where = f"{report.norm} eps={format_eps(budgets[-1])}"
    reasons = []
    if rate is None:
        reasons.append(
            f"the model classifies none of the {report.n_examples} examples correctly, so the success "
            f"rate of an attack cannot be measured (min_success_rate={threshold:g})"
        )
    elif rate < threshold:
        reasons.append(
            f"attack success rate {_pct(rate)} ({n_broken} of {n_correct} clean-correct samples broken) "
            f"at {where} is below min_success_rate={threshold:g} ({_pct(threshold)})"
        )
    _fail_on(reasons, report, strict, "assert_attack_succeeds failed", rate, threshold)
    log.info("attack success rate %.4g at %s (min %g)", rate, where, threshold)
    return report
