"""Sanity checks of an evaluation: signs that its robust accuracy cannot be trusted.

They automate AutoAttack's checks (Croce and Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks"), the checklist of Carlini et
al. 2019, "On Evaluating Adversarial Robustness" (arXiv:1902.06705), and ART's full-range rule.
The runner calls :func:`run_checks` after the sweep, on a small subset of the evaluated data
(its first <= 64 examples), with what the sweep found on that subset; each check costs a few
forward and backward passes (``benchmarks/bench_checks.py`` measures the whole set).

=========================  ==============================================================
check                      warns when
=========================  ==============================================================
randomized-model           two forward passes on the same inputs differ, and no declared
                           randomized defense is attacked with EOT
probability-outputs        the model's rows are non-negative and sum to 1 (probabilities)
zero-gradients             > 10% of correctly classified points have a zero or non-finite
                           input gradient of the cross-entropy
dynamic-forward            the forward pass itself calls autograd (a dynamic defense)
too-few-classes            a targeted or DLR attack needs more classes than the model has
monotonic-accuracy         accuracy rises with the budget (worst case or any attack), the worst
                           case exceeds an attack's accuracy, or the curve stays flat above
                           chance up to a large budget
full-range-budget          PGD with a budget spanning the whole input range leaves accuracy
                           above chance (obfuscated gradients)
iterative-vs-single-step   a single-step attack (FGSM) breaks a sample that the iterative
                           attacks do not break at the same budget
black-box-vs-white-box     a black-box attack (Square) breaks a sample that the white-box
                           attacks left robust
convergence                one fresh run of the strongest iterative attack with twice its steps
                           (one restart), at the budget whose worst case is closest to 50%, on
                           at most 16 of the samples the sweep left robust, breaks more than 2%
                           of the subset (scaled to all unbroken samples) and more than one sample
=========================  ==============================================================

Choices. Attacks the checks run themselves (FGSM per budget when the evaluation has no
single-step attack, full-range PGD, Square with 300 queries when the evaluation has no black-box
attack, the doubled-steps rerun) verify by re-prediction, and on a randomized model a sample
counts as broken only if 3 draws all misclassify it. Full-range PGD starts at the input and at
a point of a small random ball, never at a random point of the full-range ball: that is uniform
noise, which alone breaks about (1 - 1/classes) of the samples and would hide masked gradients.
Which attacks each check compares comes from the kind every attack declares
(:data:`robustness.attacks.base.AttackKind`), never from its name or settings:
iterative-vs-single-step sets the ``"iterative"`` and ``"minimization"`` attacks against the
``"single-step"`` ones, black-box-vs-white-box the ``"black-box"`` ones against all others, and
convergence reruns an ``"iterative"`` attack (a ``"minimization"`` one only when there is no
other: Carlini-Wagner would run a whole binary search again) that has an integer ``steps``
setting, naming those without one. An attack that declares no kind makes these three checks
skipped, with the reason and how to declare it. dynamic-forward counts calls of
``torch.autograd.grad``, ``torch.autograd.backward`` and ``Tensor.backward`` during one forward
pass with a :class:`torch.overrides.TorchFunctionMode`, a thread-local mode pushed for that pass
and popped after it, even on error; nothing is patched. The three dispatch through
``__torch_function__``, so the mode also sees the calls made by ``torch.autograd.functional``
and ``torch.func.grad``.

Each check returns a :class:`robustness.report.Check`: ``passed``, ``warning`` (``failed``
under ``strict=True``) or ``skipped`` (with the reason). Randomness comes from generators
seeded from ``seed``; the model comes back unchanged: its parameters, buffers, ``.grad``,
train/eval flags, the generators it holds (e.g. :class:`robustness.defenses.GaussianNoise`'s) and the
global RNG state are restored (a snapshot of the parameters and buffers is kept meanwhile).
A check that raises is reported as skipped, with the error, and logged: it never costs the
evaluation it inspects.

Shapes: ``x`` ``(n, ...)`` and ``y``, ``correct``, ``broken_at[name]`` ``(n,)``, on the model's device.

Example::

    from robustness.checks import run_checks
    checks = run_checks(model, x[:64], y[:64], attacks={"pgd": PGD()}, broken_at={"pgd": broken},
                        correct=correct, budgets=[0.1, 0.2], robust_accuracy=report.robust_accuracy,
                        by_attack=report.by_attack, norm="linf", bounds=(0, 1), num_classes=10, seed=0)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustness.attacks.base import Attack
from robustness.checks.attack_checks import (
    black_box_vs_white_box,
    convergence,
    full_range_budget,
    iterative_vs_single_step,
    monotonic_accuracy,
)
from robustness.checks.context import CheckContext
from robustness.errors import InputError
from robustness.model import modes_restored
from robustness.checks.model_checks import (
    dynamic_forward,
    probability_outputs,
    randomized_model,
    too_few_classes,
    zero_gradients,
)
from robustness.norms import check_bounds, check_norm
from robustness.report import Check

__all__ = ["CHECKS", "run_checks"]

log = logging.getLogger(__name__)

CHECKS: tuple[tuple[str, Callable[[CheckContext], Check]], ...] = (
    ("randomized-model", randomized_model),  # first: sets the number of draws the attack checks verify with
    ("probability-outputs", probability_outputs),
    ("zero-gradients", zero_gradients),
    ("dynamic-forward", dynamic_forward),
    ("too-few-classes", too_few_classes),
    ("monotonic-accuracy", monotonic_accuracy),
    ("full-range-budget", full_range_budget),
    ("iterative-vs-single-step", iterative_vs_single_step),
    ("black-box-vs-white-box", black_box_vs_white_box),
    ("convergence", convergence),
)


# --------------------------------------------------------------------------- entry point


@contextlib.contextmanager
def _untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Restore the model's parameters, buffers, ``.grad``, train flags and generators, and the global RNG."""
    with torch.no_grad():
        tensors = [(t, t.detach().clone()) for t in [*model.parameters(), *model.buffers()]]
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    generators: list[tuple[torch.Generator, Tensor]] = []
    added: list[tuple[dict, set]] = []
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Generator):
                generators.append((value, value.get_state()))
            elif isinstance(value, dict) and all(isinstance(g, torch.Generator) for g in value.values()):
                generators += [(g, g.get_state()) for g in value.values()]  # e.g. one generator per device
                added.append((value, set(value)))
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with modes_restored(model), torch.random.fork_rng(devices=cuda):
            yield
    finally:
        with torch.no_grad():
            for t, saved in tensors:
                if t.shape == saved.shape:
                    t.copy_(saved)
        for p, g in grads:
            p.grad = g
        for g, state in generators:
            g.set_state(state)
        for d, keys in added:  # generators made during the checks (a first draw on a device) go again
            for key in [k for k, v in d.items() if k not in keys and isinstance(v, torch.Generator)]:
                del d[key]


def _validate(x: Tensor, y: Tensor, attacks: dict[str, Attack], broken_at: dict[str, Tensor], correct: Tensor,
              budgets: list[float]) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise InputError("run_checks: x must be a floating-point tensor (n, ...)")
    n = x.shape[0]
    for what, t in [("y", y), ("correct", correct), *((f"broken_at[{k!r}]", v) for k, v in broken_at.items())]:
        if not isinstance(t, Tensor) or t.shape != (n,):
            raise InputError(f"run_checks: {what} must be a tensor of shape ({n},), got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
    if set(broken_at) != set(attacks):
        raise InputError(f"run_checks: broken_at has attacks {sorted(broken_at)} but attacks has {sorted(attacks)}")
    if list(budgets) != sorted(budgets) or any(not (e > 0) for e in budgets):
        raise InputError(f"run_checks: budgets must be sorted and > 0, got {budgets}")


def run_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attacks: dict[str, Attack],
    broken_at: dict[str, Tensor],
    correct: Tensor,
    budgets: list[float],
    robust_accuracy: dict[float, float],
    by_attack: dict[str, dict[float, float]],
    norm: str,
    bounds: tuple[float, float],
    num_classes: int,
    seed: int,
    strict: bool = False,
    progress: bool = False,
    cascade: bool = False,
) -> list[Check]:
    """The verdicts of every check in :data:`CHECKS`, in that order.

    Args:
        model: the evaluated model, in eval mode, on ``x``'s device, in the gradient mode the
            attacks used (its preprocessing defenses as they were during the sweep).
        x, y: a small subset of the evaluated data (the runner passes its first <= 64 examples).
        attacks: the evaluation's attacks by report name, in order.
        broken_at: per attack, for each subset sample, the index into ``budgets`` of the first
            budget that broke it; ``len(budgets)``: never broken (or misclassified clean).
        correct: bool ``(n,)``, clean prediction correct.
        budgets: the positive budgets, sorted.
        robust_accuracy: the report's worst case per budget over the whole evaluation (0: clean).
        by_attack: the report's accuracy per attack and budget.
        norm, bounds, num_classes, seed: those of the evaluation.
        strict: a check that would warn fails instead.
        progress: show a tqdm bar over the checks on stderr (the runner passes its own rule: asked for,
            and stderr a terminal).
        cascade: the attacks ran cascaded (each only on the samples the earlier ones left robust):
            ``by_attack`` is then cumulative, and a comparison between attacks counts a sample
            against an attack only where that attack ran on it.

    Returns:
        One :class:`Check` per check.
    """
    norm = check_norm(norm)
    bounds = check_bounds(bounds)
    _validate(x, y, attacks, broken_at, correct, budgets)
    device = x.device
    ctx = CheckContext(
        model=model, x=x.detach(), y=y.to(device).long(), correct=correct.to(device).bool(), attacks=dict(attacks),
        broken_at={k: v.to(device).long() for k, v in broken_at.items()}, budgets=[float(e) for e in budgets],
        robust_accuracy=dict(robust_accuracy), by_attack={k: dict(v) for k, v in by_attack.items()}, norm=norm,
        bounds=bounds, num_classes=int(num_classes), seed=int(seed), strict=bool(strict), cascade=bool(cascade),
    )
    results: list[Check] = []
    with _untouched(model, device), tqdm(CHECKS, desc="checks", unit="check", disable=not progress) as bar:
        for name, check in bar:
            bar.set_postfix_str(name)
            start = time.perf_counter()
            try:
                result = check(ctx)
            except Exception as err:  # a broken check must not cost the evaluation it inspects
                log.warning("check %s raised", name, exc_info=True)
                result = Check(name, "skipped", f"the check could not run: {type(err).__name__}: {err}")
            log.debug("check %s: %s in %.3f s", name, result.status, time.perf_counter() - start)
            results.append(result)
    return results
