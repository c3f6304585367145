"""Auto-PGD (Croce and Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), Linf, L2 and L1: APGD-CE, APGD-DLR and APGD-T.

APGD is PGD without a step size to tune. Per run of ``steps`` iterations it

* starts at a random point (or at ``init``) with step ``eta = 2 * eps``: ``start="uniform"``, uniform
  in the ``eps`` ball, or ``start="surface"``, on its surface as the reference implementation draws
  it (:func:`robustness.attacks.pgd.surface_start`);
* steps with momentum: ``z = P(x_k + eta * s(grad))``, then
  ``x_{k+1} = P(x_k + a * (z - x_k) + (1 - a) * (x_k - x_{k-1}))`` with ``a = momentum`` (0.75;
  the first step has none), where ``s`` is the sign (Linf) or the L2-normalised gradient, and
  ``P`` clips to the bounds and projects onto the ball;
* at the checkpoints ``w_j = ceil(p_j * steps)``, ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (:func:`checkpoints`), halves ``eta`` for
  the samples where (a) fewer than ``rho`` of the steps since the last checkpoint raised the loss,
  or (b) ``eta`` was not halved at the last checkpoint and the best loss has not improved since
  (:func:`step_halving`); those samples continue from their best point. ``halving="paper"`` reads
  (a) as the paper writes it (``<``) and applies (b) from the first checkpoint on;
  ``halving="reference"`` as the reference code does (``<=``, and (b) only from the second
  checkpoint: it starts as if the step had just been halved).

EOT: ``eot_samples=k`` averages every gradient over ``k`` forward passes of a randomized model,
and an iterate counts as adversarial only when it fools all ``k`` draws (:mod:`robustness.attacks.eot`).

Reference settings (AutoAttack, ``autopgd_base.py``) against ours: the defaults are the
reference's, ``start="surface", halving="reference"``, because ours were not measurably better
(``benchmarks/bench_reference_settings.py``, ``benchmarks/results/reference_settings.md``: over the
two shipped digits CNNs, two norms and two seeds, the uniform start broke 24 samples the surface
start did not and the surface start 24 the uniform did not; the two halving tests gave identical
results). ``start="uniform", halving="paper"`` remain as named settings.

Losses: ``"ce"`` (cross-entropy) or ``"dlr"``, the Difference of Logits Ratio
``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (sorted logits ``z_pi1 >= z_pi2 >= ...``),
invariant to shifts and scalings of the logits (needs >= 3 classes). :class:`APGDT` runs the
targeted DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (needs >= 4 classes) once per
target class ``t`` among the ``target_classes`` highest-scoring wrong classes of the clean
input; it still counts any misclassification as a success.

Per sample it keeps the first iterate that fools the model, or else the iterate of highest
loss, over all restarts (and targets). Fooled samples leave the working batch (``early_stop``)
and are not attacked again. Given ``init`` (the runner passes the best point found at the
previous, smaller budget), the first run starts there instead of at a random point.

L1 is l1-APGD (Croce and Hein 2021, "Mind the box: l1-APGD for sparse adversarial attacks on
image classifiers"), with the reference implementation's constants (AutoAttack's
``autopgd_base.py``), in :mod:`robustness.attacks.apgd_l1`:

* the start is a Gaussian draw projected onto the ball intersected with the box
  (:func:`robustness.norms.project_l1_box`); the initial step is ``eta = eps``
  (``rel_stepsize`` 1);
* each step moves the ``k`` coordinates of largest ``|grad|`` among those that can still move
  inside the bounds in the gradient's direction, each by ``eta / k`` along the gradient's sign
  (:func:`robustness.attacks.fgsm.sparse_l1_direction`), then projects exactly onto the ball
  intersected with the box; no momentum (the reference takes none for L1);
* every ``max(floor(0.04 * steps), 1)`` steps the sparsity adapts: with ``s`` the number of
  nonzero coordinates of the best point's perturbation, ``k`` becomes ``s / 1.5`` (it starts at
  20% of the coordinates, or at ``s / 1.5`` of a warm start); where ``s`` fell below 95% of its
  last value the step resets to ``eps`` and the run goes on from its best point, elsewhere the
  step shrinks by 1.5, within ``[eps / 10, eps]``;
* ``large_eps`` (the reference's ``use_largereps``, on by default for L1 as in AutoAttack's L1
  protocol): each run spends 30%, 30% and 40% of its steps at budgets ``3 eps``, ``2 eps`` and
  ``eps`` (``ceil(0.3 steps)``, ``ceil(0.3 steps)`` and the rest), each stage starting from the
  previous stage's best point projected onto its ball. Only points within ``eps`` count as
  results.

Shapes: ``x`` is ``(N, ...)`` in pixel space, ``y`` (and ``target``) ``(N,)``.

Example::

    from robustness.attacks import APGD, APGDT
    gen = torch.Generator().manual_seed(0)
    adv = APGD(norm="linf", steps=100, loss="ce")(model, x, y, eps=8 / 255, generator=gen)
    adv = APGDT(norm="l2", steps=100, target_classes=9)(model, x, y, eps=0.5, generator=gen)
    adv = APGD(norm="l1", steps=100, restarts=5)(model, x, y, eps=12.0, generator=gen)  # large_eps
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustness.attacks.base import AttackKind, BestPoints, FixedBudgetAttack, RunState
from robustness.attacks.early_stop import Shrinker
from robustness.attacks.eot import check_eot_samples, eot_gradient
from robustness.attacks.apgd_l1 import L1Coordinates, check_l1_coordinates, check_large_eps, l1_run, l1_stages
from robustness.attacks.fgsm import gradient_step
from robustness.attacks.losses import is_adversarial
from robustness.attacks.pgd import random_start, surface_start
from robustness.errors import InputError
from robustness.norms import Norm, clip_to_bounds, project

__all__ = ["APGD", "APGDT", "ApgdHalving", "ApgdLoss", "ApgdStart", "checkpoints", "dlr_loss", "step_halving",
           "targeted_dlr_loss"]

log = logging.getLogger(__name__)

ApgdLoss = Literal["ce", "dlr"]
_LOSSES = ("ce", "dlr")
#: where a run starts without ``init``: uniform in the ball (ours) or on its surface (the reference's)
ApgdStart = Literal["uniform", "surface"]
_STARTS = ("uniform", "surface")
#: the step-halving test: as the paper writes it, or as the reference code does it
ApgdHalving = Literal["paper", "reference"]
_HALVINGS = ("paper", "reference")
_TINY = 1e-12


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)`` at which APGD may halve its step, ascending, from 0.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` while
    ``p_j <= 1``. Computed exactly in hundredths: in floating point, ``0.22 + 0.19`` exceeds 0.41
    and the ceiling would move a checkpoint (57 becomes 58 for 100 steps). Checkpoints that
    coincide for small ``steps`` appear once.
    """
    p = [0, 22]
    while (nxt := p[-1] + max(p[-1] - p[-2] - 3, 6)) <= 100:
        p.append(nxt)
    return sorted({-(-q * steps // 100) for q in p})


def step_halving(
    increases: Tensor, period: int, rho: float, halved_last: Tensor, best_loss: Tensor, best_loss_last: Tensor,
    *, reference: bool = False,
) -> Tensor:
    """Which samples halve their step at a checkpoint, boolean ``(N,)``.

    Args:
        increases: per sample, how many of the ``period`` steps since the last checkpoint raised
            the loss over the point they started from.
        period: iterations since the last checkpoint.
        rho: the fraction of successful steps below which the step is too large (0.75).
        halved_last: whether the step was halved at the last checkpoint.
        best_loss, best_loss_last: the best loss now and at the last checkpoint.
        reference: condition (a) as the reference code tests it, ``increases <= rho * period``
            (``check_oscillation``), instead of the paper's ``<``.
    """
    too_few_increases = increases <= rho * period if reference else increases < rho * period
    stalled = ~halved_last & (best_loss <= best_loss_last)
    return too_few_increases | stalled


def _sorted_top(logits: Tensor, k: int) -> Tensor:
    return logits.topk(k, dim=1).values


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` per sample, ``(N,)``."""
    top = _sorted_top(logits, 3)
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return -(true - others) / (top[:, 0] - top[:, 2] + _TINY)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` per sample, ``(N,)``."""
    top = _sorted_top(logits, 4)
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


def _positive_int(owner: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{owner} {field} must be an integer >= 1, got {value!r}")


def _fraction(owner: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InputError(f"{owner} {field} must be a number in (0, 1], got {value!r}")


@dataclass(frozen=True, kw_only=True)
class APGD(FixedBudgetAttack):
    """Auto-PGD with the cross-entropy (``"apgd-ce"``) or the DLR loss (``"apgd-dlr"``).

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (l1-APGD, see the module docstring).
        steps: iterations per run (``steps + 1`` forward passes, ``steps`` backward; L1 with
            ``large_eps``: ``steps + 3`` and ``steps``), split over the stages with ``large_eps``.
        restarts: runs from independent random starts; samples fooled stay fooled.
        loss: ``"ce"`` or ``"dlr"`` (>= 3 classes; with ``target``, the targeted DLR, >= 4).
        rho: checkpoint condition (a): the step halves when fewer than this fraction of the
            steps since the last checkpoint raised the loss (Linf and L2).
        momentum: weight ``a`` of the new step against the previous one (Linf and L2).
        rel_stepsize: the initial step ``eta`` as a multiple of ``eps``; ``None``: the
            reference's, 2 for Linf and L2, 1 for L1.
        random_start: start at a random point of the ball (else at ``x``) when no ``init`` is given.
        start: where that random point lies: ``"uniform"`` in the ball or on its ``"surface"``
            (the reference's: Linf scaled to the largest entry, L2 on the sphere).
        halving: the step-halving test, ``"paper"`` (``<``) or ``"reference"`` (``<=``, and no
            stall test at the first checkpoint).
        early_stop: drop samples from the working batch once fooled.
        eot_samples: forward passes each gradient is averaged over (EOT), for randomized models.
        large_eps: L1 only, the large-epsilon schedule (module docstring); ``None`` means on for
            L1. Needs ``steps >= 3``. Linf and L2 refuse ``True``.
        l1_coordinates: L1 only, which coordinates the sparse step ranks by ``|grad|``: ``"box"``
            (ours: only those that can still move inside the bounds in the gradient's direction)
            or ``"all"`` (the reference's). Measured on the digits CNN
            (``benchmarks/results/apgd_l1.md``): ``"box"`` is about 1.2 points stronger at L1 budget
            2 and 0.2-1.5 points weaker at budget 1; the presets named after AutoAttack use ``"all"``.
    """

    name: ClassVar[str] = "apgd-ce"
    kind: ClassVar[AttackKind] = "iterative"
    uses_init: ClassVar[bool] = True
    norm: Norm = "linf"
    steps: int = 100
    restarts: int = 1
    loss: ApgdLoss = "ce"
    rho: float = 0.75
    momentum: float = 0.75
    rel_stepsize: float | None = None
    random_start: bool = True
    start: ApgdStart = "surface"
    halving: ApgdHalving = "reference"
    early_stop: bool = True
    eot_samples: int = 1
    large_eps: bool | None = None
    l1_coordinates: L1Coordinates = "box"

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        if self.loss not in _LOSSES:
            raise InputError(f"{owner} loss must be one of {', '.join(_LOSSES)}, got {self.loss!r}")
        if self.start not in _STARTS:
            raise InputError(f"{owner} start must be one of {', '.join(_STARTS)}, got {self.start!r}")
        check_l1_coordinates(owner, self.l1_coordinates)
        if self.halving not in _HALVINGS:
            raise InputError(f"{owner} halving must be one of {', '.join(_HALVINGS)}, got {self.halving!r}")
        check_eot_samples(owner, self.eot_samples)
        _positive_int(owner, "steps", self.steps)
        _positive_int(owner, "restarts", self.restarts)
        _fraction(owner, "rho", self.rho)
        _fraction(owner, "momentum", self.momentum)
        r = self.rel_stepsize
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not (
                math.isfinite(r) and r > 0)):
            raise InputError(f"{owner} rel_stepsize must be a positive number or None (the reference's), got {r!r}")
        for field in ("random_start", "early_stop"):
            if not isinstance(getattr(self, field), bool):
                raise InputError(f"{owner} {field} must be True or False, got {getattr(self, field)!r}")
        check_large_eps(owner, self.norm, self.large_eps, self.steps)

    @property
    def step_fraction(self) -> float:
        """The initial step ``eta`` as a multiple of ``eps``: ``rel_stepsize``, else 2 (Linf, L2) or 1 (L1)."""
        if self.rel_stepsize is not None:
            return float(self.rel_stepsize)
        return 1.0 if self.norm == "l1" else 2.0

    @property
    def stages(self) -> list[tuple[float, int]]:
        """``(budget multiple, steps)`` of each stage of a run: one stage ``(1, steps)`` unless L1 with
        ``large_eps``, then ``(3, ceil(0.3 steps)), (2, ceil(0.3 steps)), (1, the rest)``."""
        return l1_stages(self.norm, self.large_eps, self.steps)

    @property
    def label(self) -> str:
        """``"apgd-ce"`` or ``"apgd-dlr"``, after the loss."""
        return f"apgd-{self.loss}"

    # -- objective ---------------------------------------------------------------------------

    def _objective(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Per-sample loss to maximise; ``target`` makes it targeted."""
        classes = logits.shape[1]
        if self.loss == "ce":
            return F.cross_entropy(logits, y, reduction="none") if target is None else (
                -F.cross_entropy(logits, target, reduction="none"))
        need = 3 if target is None else 4
        if classes < need:
            kind = "the DLR loss" if target is None else "the targeted DLR loss"
            raise InputError(
                f"{kind} needs a model with at least {need} classes, this one has {classes}: "
                f"use loss='ce' (APGD) instead"
            )
        return dlr_loss(logits, y) if target is None else targeted_dlr_loss(logits, y, target)

    # -- runs ----------------------------------------------------------------------------------

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float,
        bounds: tuple[float, float],
        target: Tensor | None,
        generator: torch.Generator,
        init: Tensor | None = None,
    ) -> Tensor:
        return self._runs(model, x, y, [target] * self.restarts, target, eps=eps, bounds=bounds, generator=generator,
                          init=init)

    def _runs(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        loss_targets: list[Tensor | None],
        success_target: Tensor | None,
        *,
        eps: float,
        bounds: tuple[float, float],
        generator: torch.Generator,
        init: Tensor | None,
    ) -> Tensor:
        """One run per entry of ``loss_targets`` (the labels its loss aims at; ``None``: untargeted),
        the first on every sample (from ``init`` when given), each later one on the samples not
        fooled yet; returns the best point per sample."""
        best = BestPoints(x)
        for r, idx in best.runs(len(loss_targets)):
            log.debug("%s: a run of %d steps on %d samples", self.label, self.steps, idx.numel())
            loss_target = loss_targets[r]
            x0, y0 = x[idx], y[idx]
            lt = None if loss_target is None else loss_target[idx]
            st = None if success_target is None else success_target[idx]
            if self.norm == "l1":
                l1_run(self, model, best, idx, x0, y0, lt, st, eps=eps, bounds=bounds, generator=generator,
                             init=init[idx] if r == 0 and init is not None else None)
                continue
            if r == 0 and init is not None:
                start = init[idx]
            elif self.random_start:
                draw = surface_start if self.start == "surface" else random_start
                start = clip_to_bounds(draw(x0, eps, self.norm, generator), bounds)
            else:
                start = x0.clone()
            obj, grad, success = self._evaluate(model, start, y0, lt, st, with_grad=True)
            run = _APGDRun.start(
                best, idx, x0=x0, y=y0, loss_target=lt, success_target=st, x=start, x_prev=start, grad=grad,
                loss=obj, x_max=start, grad_max=grad, loss_max=obj, loss_max_last=obj,
                eta=torch.full(idx.shape, self.step_fraction * eps, dtype=x.dtype, device=x.device),
                increases=torch.zeros_like(obj),
                halved_last=torch.full_like(obj, self.halving == "reference", dtype=torch.bool),
            )
            run.record(start, obj, success)
            self._steps(model, run, eps=eps, bounds=bounds)
        return best.x

    def _evaluate(
        self, model: nn.Module, x_in: Tensor, y: Tensor, loss_target: Tensor | None, success_target: Tensor | None,
        *, with_grad: bool,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Loss, its input gradient (``None`` without ``with_grad``) and success at ``x_in``, over
        ``eot_samples`` draws (success: on every draw)."""
        draws = eot_gradient(model, x_in, lambda logits: self._objective(logits, y, loss_target),
                             lambda logits: is_adversarial(logits, y, success_target), samples=self.eot_samples,
                             with_grad=with_grad)
        return draws.loss, draws.grad, draws.fooled

    def _steps(self, model: nn.Module, run: _APGDRun, *, eps: float, bounds: tuple[float, float]) -> None:
        """The ``steps`` APGD iterations of one run, from the point ``run`` holds (evaluated already).

        ``run`` shrinks when samples are fooled (``early_stop``; see
        :class:`robustness.attacks.early_stop.Shrinker`), writing its best points back first.
        """
        view = (-1,) + (1,) * (run.x.dim() - 1)
        shrinker = Shrinker(run.x.device)
        if self.early_stop and not run.shrink(shrinker.update(run.done())):
            return
        marks = checkpoints(self.steps)
        periods = {w: w - v for v, w in zip(marks, marks[1:])}
        for t in range(1, self.steps + 1):
            last = t == self.steps
            a = 1.0 if t == 1 else self.momentum
            x_cur, x0 = run.x, run.x0
            z = gradient_step(x_cur, run.grad, run.eta.view(view), self.norm)
            z = project(clip_to_bounds(z, bounds), x0, eps, self.norm)
            x_new = x_cur + a * (z - x_cur) + (1 - a) * (x_cur - run.x_prev)
            # clip, then project: the result stays in both (the box and the ball are convex)
            x_new = project(clip_to_bounds(x_new, bounds), x0, eps, self.norm)
            obj, grad, success = self._evaluate(model, x_new, run.y, run.loss_target, run.success_target,
                                                with_grad=not last)
            run.record(x_new, obj, success)
            if last:
                break
            run.increases = run.increases + (obj > run.loss)
            better = obj > run.loss_max
            run.x_max = torch.where(better.view(view), x_new, run.x_max)
            run.grad_max = torch.where(better.view(view), grad, run.grad_max)
            run.loss_max = torch.where(better, obj, run.loss_max)
            run.x_prev, run.x, run.grad, run.loss = x_cur, x_new, grad, obj
            if t in periods:
                halve = step_halving(run.increases, periods[t], self.rho, run.halved_last, run.loss_max,
                                     run.loss_max_last, reference=self.halving == "reference")
                run.eta = torch.where(halve, 0.5 * run.eta, run.eta)
                # halved samples go on from their best point
                run.x = torch.where(halve.view(view), run.x_max, run.x)
                run.grad = torch.where(halve.view(view), run.grad_max, run.grad)
                run.loss = torch.where(halve, run.loss_max, run.loss)
                run.increases = torch.zeros_like(run.increases)
                run.halved_last, run.loss_max_last = halve, run.loss_max
            if self.early_stop and not run.shrink(shrinker.update(run.done())):
                return
        run.write_back()


@dataclass(eq=False, kw_only=True)
class _APGDRun(RunState):
    """One APGD run's working batch: the samples still attacked, one row each."""

    x0: Tensor
    y: Tensor
    loss_target: Tensor | None  # the labels the loss aims at (APGD-T's target class); None: untargeted
    success_target: Tensor | None  # the labels success means reaching; None: any misclassification
    x: Tensor  # the current point, its loss gradient and loss
    grad: Tensor
    loss: Tensor
    x_prev: Tensor  # the previous point (momentum)
    x_max: Tensor  # the point of highest loss so far, its gradient and loss
    grad_max: Tensor
    loss_max: Tensor
    loss_max_last: Tensor  # the highest loss at the last checkpoint
    eta: Tensor  # the step size
    increases: Tensor  # steps since the last checkpoint that raised the loss
    halved_last: Tensor  # whether eta was halved at the last checkpoint


@dataclass(frozen=True, kw_only=True)
class APGDDLR(APGD):
    """APGD with the untargeted DLR loss by default (Croce and Hein 2020); ``APGD(loss="dlr")``."""

    name: ClassVar[str] = "apgd-dlr"
    loss: ApgdLoss = "dlr"


@dataclass(frozen=True, kw_only=True)
class APGDT(APGD):
    """APGD with the targeted DLR loss, once per target class; success is any misclassification.

    For each of the ``target_classes`` highest-scoring wrong classes of the clean input (at most
    ``classes - 1``), in decreasing order of score, ``restarts`` runs of APGD maximise the
    targeted DLR loss towards that class, on the samples not fooled yet (one forward pass on the
    clean input picks the classes). With an explicit ``target`` only that class is attacked, and
    success means reaching it.

    Args:
        target_classes: how many target classes to try (9 in Croce and Hein 2020).
        loss: ``"dlr"`` (the targeted DLR, >= 4 classes) or ``"ce"`` (``-CE(logits, t)``).
        Other arguments as in :class:`APGD`.
    """

    name: ClassVar[str] = "apgd-t"
    loss: ApgdLoss = "dlr"
    target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(type(self).__name__, "target_classes", self.target_classes)

    @property
    def label(self) -> str:
        """``"apgd-t"`` (targeted DLR) or ``"apgd-t-ce"``."""
        return "apgd-t" if self.loss == "dlr" else "apgd-t-ce"

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float,
        bounds: tuple[float, float],
        target: Tensor | None,
        generator: torch.Generator,
        init: Tensor | None = None,
    ) -> Tensor:
        if target is not None:
            targets, success_target = target[:, None], target
        else:
            with torch.no_grad():
                logits = model(x)
            classes = logits.shape[1]
            if self.loss == "dlr" and classes < 4:
                raise InputError(
                    f"APGD-T with the targeted DLR loss needs a model with at least 4 classes, this one has "
                    f"{classes}: use APGD (apgd-ce) instead"
                )
            if classes < 2:
                raise InputError(f"APGD-T needs at least 2 classes, the model has {classes}")
            k = min(self.target_classes, classes - 1)
            wrong = logits.detach().masked_fill(F.one_hot(y, classes).bool(), float("-inf"))
            targets, success_target = wrong.topk(k, dim=1).indices, None
        loss_targets = [targets[:, j] for j in range(targets.shape[1]) for _ in range(self.restarts)]
        return self._runs(model, x, y, loss_targets, success_target, eps=eps, bounds=bounds, generator=generator,
                          init=init)
