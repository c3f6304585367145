"""l1-APGD (Croce and Hein 2021, "Mind the box: l1-APGD for sparse adversarial attacks on image
classifiers"): the L1 runs of :class:`robustness.attacks.apgd.APGD`, with the reference
implementation's constants (AutoAttack's ``autopgd_base.py``). The algorithm is described in
:mod:`robustness.attacks.apgd`'s docstring; :class:`~robustness.attacks.apgd.APGD` calls
:func:`l1_run` once per run when ``norm="l1"``.

Shapes: ``x0`` is ``(n, ...)`` (the samples of the run), labels ``(n,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from robustness.attacks.base import BestPoints, RunState
from robustness.attacks.early_stop import Shrinker
from robustness.attacks.fgsm import movable, sparse_l1_direction
from robustness.errors import InputError
from robustness.norms import norm_of, project_l1_box

if TYPE_CHECKING:
    from robustness.attacks.apgd import APGD

__all__ = ["L1Coordinates", "L1Run", "check_l1_coordinates", "check_large_eps", "l1_run", "l1_stages"]

#: the coordinates l1-APGD's sparse step ranks: those free to move inside the box (ours), or all (the reference's)
L1Coordinates = Literal["box", "all"]
_L1_COORDINATES = ("box", "all")
#: l1-APGD's constants, as in the reference implementation: the initial share of coordinates a step
#: moves, the checkpoint period as a share of the steps, the sparsity drop that resets the step, the
#: factor by which the step (and the sparsity of a warm start) shrinks, the smallest step (a share of
#: the largest) and the large-epsilon schedule (budget multiples and shares of the steps)
_L1_TOPK = 0.2
_L1_PERIOD = 0.04
_L1_SPARSITY_DROP = 0.95
_L1_SHRINK = 1.5
_L1_MIN_STEP = 0.1
_L1_SCHEDULE = ((3.0, 0.3), (2.0, 0.3), (1.0, 0.4))


def l1_stages(norm: str, large_eps: bool | None, steps: int) -> list[tuple[float, int]]:
    """``(budget multiple, steps)`` of each stage of a run: one stage ``(1, steps)`` unless L1 with
    ``large_eps``, then ``(3, ceil(0.3 steps)), (2, ceil(0.3 steps)), (1, the rest)``."""
    if norm != "l1" or large_eps is False:
        return [(1.0, steps)]
    first = [(factor, math.ceil(share * steps)) for factor, share in _L1_SCHEDULE[:-1]]
    return first + [(_L1_SCHEDULE[-1][0], steps - sum(n for _, n in first))]


def check_l1_coordinates(owner: str, value: object) -> None:
    """``value`` is one of the coordinate choices of l1-APGD's sparse step, else :class:`InputError`."""
    if value not in _L1_COORDINATES:
        raise InputError(f"{owner} l1_coordinates must be one of {', '.join(_L1_COORDINATES)} (\"box\": only "
                         f"coordinates that can move inside the bounds; \"all\": the reference's), got {value!r}")


def check_large_eps(owner: str, norm: str, large_eps: object, steps: int) -> None:
    if large_eps is not None and not isinstance(large_eps, bool):
        raise InputError(f"{owner} large_eps must be True, False or None (on for L1), got {large_eps!r}")
    if norm != "l1" and large_eps:
        raise InputError(f"{owner} large_eps is l1-APGD's schedule (Croce and Hein 2021): it applies to norm='l1' "
                         f"only; leave it unset for norm={norm!r}")
    if norm == "l1" and large_eps is not False and steps < len(_L1_SCHEDULE):
        raise InputError(f"{owner} with norm='l1' and large_eps runs {len(_L1_SCHEDULE)} stages of at least one "
                         f"step: use steps >= {len(_L1_SCHEDULE)} or large_eps=False (got steps={steps})")


def l1_run(
    attack: APGD, model: nn.Module, best: BestPoints, idx: Tensor, x0: Tensor, y: Tensor, loss_target: Tensor | None,
    success_target: Tensor | None, *, eps: float, bounds: tuple[float, float], generator: torch.Generator,
    init: Tensor | None,
) -> None:
    """One l1-APGD run (every stage of the large-epsilon schedule) on the samples ``idx``."""
    stages = attack.stages
    first = stages[0][0] * eps
    warm = init is not None or len(stages) > 1  # the reference sizes k from a given start's sparsity
    if init is not None:
        start = init
    elif attack.random_start:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        start = x0 + project_l1_box(x0, noise, first, bounds)
    else:
        start = x0.clone()
    run = L1Run.start(
        best, idx, x0=x0, y=y, loss_target=loss_target, success_target=success_target, x=start, grad=start,
        x_max=start, grad_max=start, loss_max=start.new_zeros(idx.shape), eta=start.new_zeros(idx.shape),
        topk=start.new_zeros(idx.shape), sparsity=start.new_zeros(idx.shape),
    )
    for stage, (factor, steps) in enumerate(stages):
        stage_eps = factor * eps
        _begin_stage(attack, model, run, start if stage == 0 else run.x_max, stage_eps, eps, bounds, warm=warm)
        if not _steps(attack, model, run, eps=eps, stage_eps=stage_eps, steps=steps, bounds=bounds):
            return
        warm = True
    run.write_back()

def _begin_stage(attack: APGD, model: nn.Module, run: L1Run, start: Tensor, stage_eps: float, eps: float,
                 bounds: tuple[float, float], *, warm: bool) -> None:
    """Project ``start`` into the stage's ball and box, evaluate it and reset the step and sparsity."""
    x = run.x0 + project_l1_box(run.x0, start - run.x0, stage_eps, bounds)
    obj, grad, success = attack._evaluate(model, x, run.y, run.loss_target, run.success_target, with_grad=True)
    _record(run, x, obj, success, stage_eps, eps)
    run.x, run.grad, run.x_max, run.grad_max, run.loss_max = x, grad, x, grad, obj
    run.eta = torch.full_like(obj, attack.step_fraction * stage_eps)
    dims = x[0].numel()
    nonzero = (x != run.x0).flatten(1).sum(dim=1).to(x.dtype)
    sized = nonzero > 0 if warm else torch.zeros_like(nonzero, dtype=torch.bool)
    run.topk = torch.where(sized, nonzero / dims / _L1_SHRINK, torch.full_like(nonzero, _L1_TOPK))
    run.sparsity = torch.where(sized, nonzero, torch.full_like(nonzero, float(dims)))

def _record(run: L1Run, x: Tensor, obj: Tensor, success: Tensor, stage_eps: float, eps: float) -> None:
    """Record the points of a stage; at a budget above ``eps`` only those within ``eps`` count."""
    if stage_eps > eps:
        within = norm_of(x - run.x0, "l1") <= eps
        obj, success = torch.where(within, obj, torch.full_like(obj, -math.inf)), success & within
    run.record(x, obj, success)

def _steps(attack: APGD, model: nn.Module, run: L1Run, *, eps: float, stage_eps: float, steps: int,
           bounds: tuple[float, float]) -> bool:
    """The ``steps`` l1-APGD iterations of one stage; ``False`` when every sample is fooled."""
    view = (-1,) + (1,) * (run.x.dim() - 1)
    shrinker = Shrinker(run.x.device)
    if attack.early_stop and not run.shrink(shrinker.update(run.done())):
        return False
    largest = attack.step_fraction * stage_eps
    period = max(int(_L1_PERIOD * steps), 1)
    dims = run.x[0].numel()
    for t in range(1, steps + 1):
        last = t == steps
        allowed = movable(run.x, run.grad, bounds) if attack.l1_coordinates == "box" else None
        direction = sparse_l1_direction(run.grad, run.topk, allowed)
        stepped = run.x + run.eta.view(view) * direction
        x_new = run.x0 + project_l1_box(run.x0, stepped - run.x0, stage_eps, bounds)
        obj, grad, success = attack._evaluate(model, x_new, run.y, run.loss_target, run.success_target,
                                            with_grad=not last)
        _record(run, x_new, obj, success, stage_eps, eps)
        better = obj > run.loss_max
        run.x_max = torch.where(better.view(view), x_new, run.x_max)  # the next stage starts there
        run.loss_max = torch.where(better, obj, run.loss_max)
        if last:
            break
        run.grad_max = torch.where(better.view(view), grad, run.grad_max)
        run.x, run.grad = x_new, grad
        if t % period == 0:
            nonzero = (run.x_max != run.x0).flatten(1).sum(dim=1).to(obj.dtype)
            sparser = nonzero / run.sparsity.clamp_min(1) < _L1_SPARSITY_DROP
            run.topk = nonzero / dims / _L1_SHRINK
            run.eta = torch.where(sparser, torch.full_like(run.eta, largest), run.eta / _L1_SHRINK).clamp(
                _L1_MIN_STEP * largest, largest)
            run.sparsity = nonzero
            # where the best point got sparser, go on from it with the full step
            run.x = torch.where(sparser.view(view), run.x_max, run.x)
            run.grad = torch.where(sparser.view(view), run.grad_max, run.grad)
        if attack.early_stop and not run.shrink(shrinker.update(run.done())):
            return False
    return True


@dataclass(eq=False, kw_only=True)
class L1Run(RunState):
    """One l1-APGD run's working batch (all stages): the samples still attacked, one row each."""

    x0: Tensor
    y: Tensor
    loss_target: Tensor | None
    success_target: Tensor | None
    x: Tensor  # the current point and its loss gradient
    grad: Tensor
    x_max: Tensor  # the point of highest loss in this stage, its gradient and loss
    grad_max: Tensor
    loss_max: Tensor
    eta: Tensor  # the step size (an L1 distance)
    topk: Tensor  # the share of the coordinates a step moves
    sparsity: Tensor  # nonzero coordinates of the best perturbation at the last checkpoint
