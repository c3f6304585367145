"""Fast Adaptive Boundary attack (Croce and Hein 2020, "Minimally distorted adversarial examples
with a fast adaptive boundary attack", ICML, https://arxiv.org/abs/1907.02044): FAB and FAB-T,
Linf, L2 and L1, as minimization attacks.

FAB searches, per sample, the smallest perturbation that changes the prediction. Each step
linearizes the classifier at the current point ``z`` and moves towards the nearest linearized
decision boundary, while pulling back towards the clean input ``x``:

* the hyperplane: untargeted FAB takes, over the classes ``j != y``, the one whose linearized
  boundary ``f_j(z) - f_y(z) + <grad(f_j - f_y)(z), u - z> = 0`` is nearest in the dual norm,
  ``|f_j - f_y| / ||grad(f_j - f_y)||_q`` (``q`` = 1, 2, inf for Linf, L2, L1): it needs the
  gradients of every logit (the Jacobian), one backward pass per class ``j != y`` after one
  forward pass, ``classes - 1`` backward passes per step. FAB-T follows the boundary between
  ``y`` and one target class ``t``: one backward pass per step;
* ``d1``, ``d2``: the smallest steps (in the attack's norm) from ``z`` and from ``x`` onto that
  hyperplane intersected with the box ``bounds`` (:func:`boundary_projection`, exact and batched);
* ``alpha = min(||d1|| / (||d1|| + ||d2||), alpha_max)`` and
  ``z <- clip((z + eta d1)(1 - alpha) + (x + eta d2) alpha)``: ``eta > 1`` overshoots the
  boundary, ``alpha`` biases the step towards the clean input;
* when ``z`` is adversarial it is recorded if it is the smallest so far, then pulled back,
  ``z <- x + beta (z - x)``, so that the next steps search closer to ``x``.

Runs: the first starts at ``x``; each restart starts on the sphere (in the attack's norm) of
radius ``0.5 * min(r, best)`` around ``x``, where ``best`` is the sample's smallest norm so far
and ``r`` the restart radius (the call's ``eps`` when given, else ``restart_radius``). FAB-T makes
``restarts`` runs for each of its ``target_classes`` target classes: the highest-scoring wrong
classes of the clean input, best first.

Which samples each run attacks:

* with ``eps`` (one number, or a ``(N,)`` tensor of per-sample budgets): only samples with no
  adversarial within their budget yet, and a sample leaves the run as soon as it has one (the
  reference evaluates this only between runs): inside a cascade, FAB spends nothing on what is
  already broken. ``eps`` is also the restart radius, as in the reference;
* without ``eps``: with ``exhaustive=False`` (default, as the reference run with a large eps),
  later runs only attack samples no earlier run fooled; with ``exhaustive=True`` every run
  attacks every sample and the smallest adversarial over all runs is kept (``restarts`` and
  target classes then shrink the norms, at ``restarts * target_classes`` times the cost).

Reference: ``pyautoattack`` 0.2.0 (``FABAttack_PT``), whose defaults these are (``n_iter=100``,
``alpha_max=0.1``, ``eta=1.05``, ``beta=0.9``, restart radius 0.3 / 1.0 / 5.0 for Linf / L2 / L1
on [0, 1] inputs, ``n_target_classes=9``). Differences: the restart radius also shrinks with the
best norm found (the reference resets it every run); explicit targets (``target=...``) make
success mean reaching the target, with the hyperplane of the target against its strongest rival;
inputs need not lie in [0, 1]; randomness comes from ``generator``, never from the global seed.

Randomized models: ``eot_samples=k`` averages the logits and gradients (or the Jacobian) of ``k``
forward passes (:mod:`robustness.attacks.eot`) and a point counts as adversarial only when it
fools the model on each of ``k`` draws.

Cost per step and sample: untargeted, one forward pass with the graph, ``classes - 1`` backward
passes and one forward pass to check the new point; FAB-T and explicit targets, one forward and
one backward, plus the check. (On a CPU, the loop of backward passes over one retained graph is
faster than a batched ``is_grads_batched`` backward or a batch replicated per class: 0.19 s vs
0.27 s and 0.31 s for 397 digits, 3.4 s vs 5.2 s and 11 s for 16 CIFAR-shaped PreAct ResNet-18
inputs, measured on 2 busy cores.) Plus a sort of each flattened input for the projections.

Shapes: ``x`` is ``(N, ...)`` inside ``bounds``, ``y`` and ``target`` ``(N,)``; the model returns
logits ``(N, classes)``. Works in ``x``'s dtype (float32 or float64).

Example::

    from robustness.attacks.fab import FAB, FABT
    adv = FAB(norm="l2")(model, x, y)                       # smallest adversarials found (x where none)
    adv = FAB(norm="linf", restarts=5)(model, x, y, eps=8 / 255)  # stops on samples broken within 8/255
    adv = FABT(norm="l1", target_classes=9)(model, x, y, eps=torch.full((len(x),), 10.0))
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustness.attacks.apgd import _positive_int
from robustness.attacks.base import AttackKind, MinimizationAttack, WorkingBatch
from robustness.attacks.early_stop import Shrinker
from robustness.attacks.eot import check_eot_samples, eot_gradient
from robustness.attacks.losses import is_adversarial, margin
from robustness.errors import InputError
from robustness.norms import Norm, check_norm, norm_of

__all__ = ["FAB", "FABT", "boundary_projection"]

log = logging.getLogger(__name__)

#: the reference's restart radius per norm, for inputs in [0, 1] (scaled by the bounds' width)
_RESTART_RADIUS = {"linf": 0.3, "l2": 1.0, "l1": 5.0}
#: the norm in which the distance to a linearized boundary is measured: the dual of the attack's
_DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}
#: floors of divisions (the reference's values)
_TINY_NORM, _TINY_STEP = 1e-12, 1e-8


def boundary_projection(p: Tensor, w: Tensor, c: Tensor, bounds: tuple[float, float], norm: Norm) -> Tensor:
    """Per row, the smallest step ``d`` in ``norm`` with ``<w, d> = c`` and ``p + d`` inside ``bounds``.

    The projection of ``p`` onto the hyperplane ``{u : <w, u - p> = c}`` intersected with the box.
    Where the box does not reach the hyperplane, the step to the box's corner that comes closest
    (every coordinate moved as far as the box allows in the direction of ``sign(c) * w``).

    With ``v = sign(c) w``, coordinate ``i`` can move by at most ``room_i`` (to the upper bound where
    ``v_i > 0``, to the lower one where ``v_i < 0``):

    * Linf: ``d_i = sign(v_i) min(s, room_i)``, ``s`` solving ``sum_i |v_i| min(s, room_i) = |c|``;
    * L2: ``d_i = v_i min(s, room_i / |v_i|)`` (the KKT point ``clip(s v)``), ``s`` solving
      ``sum_i v_i^2 min(s, room_i / |v_i|) = |c|``;
    * L1: coordinates in decreasing order of ``|v_i|`` move to their bound until the last one
      needed closes the remaining gap (a greedy solution of the linear program).

    Both equations in ``s`` are piecewise linear and increasing: sorting the knots gives the segment
    of the solution in closed form, for every row at once (``O(D log D)``, no iteration).

    Args:
        p: points ``(n, D)`` inside ``bounds``.
        w: hyperplane normals ``(n, D)``.
        c: targets of ``<w, d>``, ``(n,)``.
        bounds: the box ``(low, high)``.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.

    Returns:
        ``d``, ``(n, D)``.

    Example::

        d = boundary_projection(z, w, -f, (0.0, 1.0), "l2")   # onto f + <w, u - z> = 0
    """
    low, high = bounds
    n, dim = p.shape
    if dim == 0 or n == 0:
        return torch.zeros_like(p)
    v = torch.where((c < 0)[:, None], -w, w)
    gap = c.abs()[:, None]
    magnitude = v.abs()
    room = torch.where(v > 0, high - p, p - low).clamp_min_(0.0)
    active = magnitude > 0
    if norm == "l1":
        order = magnitude.argsort(dim=1, descending=True)
        m_sorted, r_sorted = magnitude.gather(1, order), room.gather(1, order)
        reached = (m_sorted * r_sorted).cumsum(dim=1)
        full = (reached < gap).sum(dim=1, keepdim=True)  # coordinates moved to their bound
        before = torch.where(full > 0, reached.gather(1, (full - 1).clamp_min(0)), torch.zeros_like(gap))
        last = (gap - before) / m_sorted.gather(1, full.clamp_max(dim - 1)).clamp_min(_TINY_NORM)
        position = torch.arange(dim, device=p.device)
        sorted_step = torch.where(position < full, r_sorted, torch.where(position == full, last, 0.0))
        step = torch.zeros_like(v).scatter_(1, order, sorted_step)
        return torch.where(active, torch.sign(v) * step, 0.0)
    if norm == "linf":
        weight, knot = magnitude, room
    else:
        weight = magnitude * magnitude
        knot = torch.where(active, room / magnitude.clamp_min(_TINY_NORM), 0.0)
    knot = torch.where(active, knot, 0.0)
    order = knot.argsort(dim=1)
    k_sorted, a_sorted = knot.gather(1, order), weight.gather(1, order)
    saturated = (a_sorted * k_sorted).cumsum(dim=1)  # what the knots up to j give once saturated
    total = a_sorted.sum(dim=1, keepdim=True)
    free = total - a_sorted.cumsum(dim=1)  # the weight of the knots above j, still growing
    below = (saturated + k_sorted * free < gap).sum(dim=1, keepdim=True)  # knots below the solution
    prev = (below - 1).clamp_min(0)
    done_before = torch.where(below > 0, saturated.gather(1, prev), torch.zeros_like(gap))
    growing = torch.where(below > 0, free.gather(1, prev), total)
    s = torch.where(below < dim, (gap - done_before) / growing.clamp_min(_TINY_NORM), math.inf)
    step = torch.minimum(knot, s)
    return torch.where(active, (v if norm == "l2" else torch.sign(v)) * step, 0.0)


def _sphere_start(x0: Tensor, radius: Tensor, norm: Norm, bounds: tuple[float, float],
                  generator: torch.Generator) -> Tensor:
    """Points on the ``norm`` sphere of radius ``radius`` (``(n,)``) around the rows of ``x0`` (``(n, D)``),
    clipped to ``bounds``: uniform directions in the cube (Linf) or Gaussian ones (L2, L1), as the reference."""
    if norm == "linf":
        t = 2 * torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) - 1
    else:
        t = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = t / norm_of(t, norm).clamp_min(_TINY_NORM)[:, None]
    return (x0 + radius[:, None] * t).clamp(*bounds)


def _check_number(owner: str, field: str, value: object, low: float, high: float, *, low_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{owner} {field} must be a finite number, got {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        left = "(" if low_open else "["
        raise InputError(f"{owner} {field} must lie in {left}{low}, {high}], got {value!r}")


def _unused(logits: Tensor) -> Tensor:
    """The success criterion of a gradient evaluation whose success FAB does not read (it checks the new point)."""
    return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)


@dataclass(eq=False)
class _Found:
    """The call's smallest adversarials so far: ``x`` ``(N, D)`` flat, ``norm`` ``(N,)`` (inf: none)."""

    x: Tensor
    norm: Tensor


@dataclass(eq=False, kw_only=True)
class _Run(WorkingBatch):
    """One run's working batch: the samples still attacked, one row each (inputs flattened)."""

    idx: Tensor  # positions in the call's batch
    x0: Tensor  # clean inputs (m, D)
    y: Tensor
    plane: Tensor | None  # FAB-T / explicit target: the class whose boundary is followed; None: nearest
    success: Tensor | None  # explicit target: success means reaching it; None: any misclassification
    stop_at: Tensor  # leave the run once the smallest norm is <= this (-1: never)
    z: Tensor  # the current point (m, D)
    best_x: Tensor
    best_norm: Tensor
    out: _Found

    def write_back(self) -> None:
        self.out.x[self.idx], self.out.norm[self.idx] = self.best_x, self.best_norm


@dataclass(frozen=True, kw_only=True)
class FAB(MinimizationAttack):
    """Untargeted FAB: the smallest perturbation found by steps onto the nearest linearized boundary.

    Args:
        norm: ``"linf"`` (default), ``"l2"`` or ``"l1"``, the norm minimized.
        steps: iterations per run (the reference's ``n_iter``, 100).
        restarts: runs per sample (the reference's ``n_restarts``, 1); the first starts at ``x``,
            the others at random points (see the module docstring).
        alpha_max: the largest weight of the step from the clean input (0.1).
        eta: overshoot of the projections onto the boundary (1.05).
        beta: the pull back towards ``x`` after an adversarial point, ``z <- x + beta (z - x)`` (0.9).
        restart_radius: the restart radius without ``eps`` (the reference's ``eps``); ``None``:
            0.3 (Linf), 1.0 (L2), 5.0 (L1) times the width of ``bounds``. With ``eps``, ``eps``.
        exhaustive: without ``eps``, run every run on every sample and keep the smallest (``True``),
            or attack only samples no earlier run fooled, as the reference (``False``).
        eot_samples: forward passes averaged per step for a randomized model (1: deterministic).
    """

    name: ClassVar[str] = "fab"
    kind: ClassVar[AttackKind] = "minimization"
    stops_at_eps: ClassVar[bool] = True
    norm: Norm = "linf"
    steps: int = 100
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    restart_radius: float | None = None
    exhaustive: bool = False
    eot_samples: int = 1

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "norm", check_norm(self.norm))
        _positive_int(owner, "steps", self.steps)
        _positive_int(owner, "restarts", self.restarts)
        _check_number(owner, "alpha_max", self.alpha_max, 0.0, 1.0, low_open=False)
        _check_number(owner, "eta", self.eta, 0.0, math.inf, low_open=True)
        _check_number(owner, "beta", self.beta, 0.0, 1.0, low_open=True)
        if self.restart_radius is not None:
            _check_number(owner, "restart_radius", self.restart_radius, 0.0, math.inf, low_open=True)
        if not isinstance(self.exhaustive, bool):
            raise InputError(f"{owner} exhaustive must be True or False, got {self.exhaustive!r}")
        check_eot_samples(owner, self.eot_samples)

    # -- what to attack ----------------------------------------------------------------------

    def _planes(self, logits: Tensor, y: Tensor, target: Tensor | None) -> list[Tensor | None]:
        """One entry per run: the class whose boundary with ``y`` the run follows, ``None`` for the nearest."""
        return [target] * self.restarts

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        bounds: tuple[float, float],
        target: Tensor | None,
        generator: torch.Generator,
        eps: float | Tensor | None = None,
    ) -> Tensor:
        n, shape = x.shape[0], x.shape[1:]
        flat = x.flatten(1)
        with torch.no_grad():
            clean = eot_gradient(model, x, lambda logits: logits[:, 0],
                                 lambda logits: is_adversarial(logits, y, target), samples=self.eot_samples,
                                 with_grad=False)
        logits = clean.logits
        if logits.dim() != 2 or logits.shape[0] != n or logits.shape[1] < 2:
            raise InputError(f"{type(self).__name__} needs a model returning logits of shape ({n}, classes) with "
                             f"at least 2 classes, got shape {tuple(logits.shape)}")
        found = _Found(flat.clone(), torch.full((n,), math.inf, dtype=x.dtype, device=x.device))
        found.norm[clean.fooled] = 0.0  # misclassified already: x itself is the smallest adversarial
        if eps is None:
            stop_at = torch.full((n,), -1.0, dtype=x.dtype, device=x.device)
            settled_at = stop_at if self.exhaustive else torch.full_like(stop_at, torch.finfo(x.dtype).max)
            radius = torch.full_like(stop_at, self._default_radius(bounds))
        else:
            stop_at = eps if isinstance(eps, Tensor) else torch.full((n,), float(eps), dtype=x.dtype, device=x.device)
            settled_at = stop_at
            radius = stop_at if self.restart_radius is None else torch.full_like(stop_at, self.restart_radius)
        # a zero budget admits no perturbation: nothing to search on those samples
        hopeless = clean.fooled if eps is None else clean.fooled | (stop_at <= 0)
        planes = self._planes(logits, y, target)
        for r, plane in enumerate(planes):
            idx = ((found.norm > settled_at) & ~hopeless).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x0 = flat[idx]
            if r % self.restarts == 0:
                z = x0.clone()
            else:
                z = _sphere_start(x0, 0.5 * torch.minimum(radius[idx], found.norm[idx]), self.norm, bounds, generator)
            log.debug("%s: run %d of %d on %d samples", self.label, r + 1, len(planes), idx.numel())
            run = _Run(idx=idx, x0=x0, y=y[idx], plane=None if plane is None else plane[idx],
                       success=None if target is None else target[idx], stop_at=stop_at[idx], z=z,
                       best_x=found.x[idx], best_norm=found.norm[idx], out=found)
            self._steps(model, run, shape, bounds, early=eps is not None)
        with torch.no_grad():
            # the returned inputs are adversarial for the whole batch at once, not only in the sub-batches
            best = found.x.view_as(x)
            verified = torch.isfinite(found.norm) & self._fooled(model, best, y, target)
            if log.isEnabledFor(logging.DEBUG):  # the count costs a host sync: only when asked for
                lost = int((torch.isfinite(found.norm) & ~verified).sum())
                log.debug("%s: %d inputs were adversarial only in a sub-batch: returning x", self.label, lost)
            return torch.where(verified.view((-1,) + (1,) * (x.dim() - 1)), best, x)

    def _default_radius(self, bounds: tuple[float, float]) -> float:
        if self.restart_radius is not None:
            return float(self.restart_radius)
        return _RESTART_RADIUS[self.norm] * (bounds[1] - bounds[0])

    # -- one run -----------------------------------------------------------------------------

    def _steps(self, model: nn.Module, run: _Run, shape: torch.Size, bounds: tuple[float, float], *,
               early: bool) -> None:
        """``steps`` FAB iterations from ``run.z``; with ``early``, samples leave once within ``stop_at``."""
        shrinker = Shrinker(run.z.device)
        with torch.no_grad():
            for _ in range(self.steps):
                with torch.enable_grad():
                    f, w = self._linearize(model, run, shape)
                z, x0 = run.z, run.x0
                m = z.shape[0]
                # the steps onto the linearized boundary f + <w, u - z> = 0, from z and from x0
                d = boundary_projection(torch.cat((z, x0)), torch.cat((w, w)),
                                        torch.cat((-f, -f - (w * (x0 - z)).sum(1))), bounds, self.norm)
                size = norm_of(d, self.norm).clamp_min(_TINY_STEP)
                d1, d2, a1, a2 = d[:m], d[m:], size[:m], size[m:]
                alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max)[:, None]
                z = ((z + self.eta * d1) * (1 - alpha) + (x0 + self.eta * d2) * alpha).clamp_(*bounds)
                fooled = self._fooled(model, z.view(m, *shape), run.y, run.success)
                dist = norm_of(z - x0, self.norm)
                better = fooled & (dist < run.best_norm)
                run.best_x = torch.where(better[:, None], z, run.best_x)
                run.best_norm = torch.where(better, dist, run.best_norm)
                run.z = torch.where(fooled[:, None], x0 + self.beta * (z - x0), z)
                if early:
                    rows = shrinker.update(run.best_norm <= run.stop_at)
                    if rows is not None:
                        run.write_back()
                        if rows.numel() == 0:
                            return
                        run.keep(rows)
        run.write_back()

    def _linearize(self, model: nn.Module, run: _Run, shape: torch.Size) -> tuple[Tensor, Tensor]:
        """The boundary the step goes to, linearized at ``run.z``: ``(f, w)``, ``(m,)`` and ``(m, D)``, the
        value (negative while not adversarial) and gradient of the logit difference that crosses 0 there."""
        z, y, m = run.z, run.y, run.z.shape[0]
        if run.plane is not None:
            plane = run.plane
            if run.success is not None:  # reach the target: against its strongest rival
                def gap(logits: Tensor) -> Tensor:
                    return -margin(logits, plane)
            else:
                def gap(logits: Tensor) -> Tensor:
                    return (logits.gather(1, plane[:, None]) - logits.gather(1, y[:, None])).squeeze(1)
            draws = eot_gradient(model, z.view(m, *shape), gap, _unused, samples=self.eot_samples)
            if draws.grad is None:  # unreachable: with_grad defaults to True
                raise RuntimeError("eot_gradient returned no gradient")
            return draws.loss, draws.grad.flatten(1)
        diff, jac = self._jacobian(model, z, y, shape)
        dist = diff.abs() / (norm_of(jac.flatten(0, 1), _DUAL[self.norm]).view(diff.shape) + _TINY_NORM)
        nearest = dist.argmin(dim=1)
        rows = torch.arange(m, device=z.device)
        return diff[rows, nearest], jac[rows, nearest]

    def _jacobian(self, model: nn.Module, z: Tensor, y: Tensor, shape: torch.Size) -> tuple[Tensor, Tensor]:
        """``f_j - f_y`` ``(m, classes - 1)`` and its input gradients ``(m, classes - 1, D)`` over the classes
        ``j != y``, means over ``eot_samples`` draws: one forward pass and ``classes - 1`` backward passes per
        draw, each through the one retained graph, with respect to the input only."""
        m = z.shape[0]
        total_diff: Tensor | None = None
        total_jac: Tensor | None = None
        for _ in range(self.eot_samples):
            z_in = z.detach().requires_grad_(True)
            logits = model(z_in.view(m, *shape))
            classes = logits.shape[1]
            others = torch.arange(classes, device=z.device).expand(m, classes)
            others = others[others != y[:, None]].view(m, classes - 1)
            diff = logits.gather(1, others) - logits.gather(1, y[:, None])
            grads = [torch.autograd.grad(diff[:, j].sum(), z_in, retain_graph=j < classes - 2)[0]
                     for j in range(classes - 1)]
            jac = torch.stack(grads, dim=1)
            diff = diff.detach()
            total_diff = diff if total_diff is None else total_diff.add_(diff)
            total_jac = jac if total_jac is None else total_jac.add_(jac)
        if total_diff is None or total_jac is None:  # unreachable: eot_samples >= 1
            raise RuntimeError("FAB drew no sample")
        if self.eot_samples > 1:
            total_diff, total_jac = total_diff / self.eot_samples, total_jac / self.eot_samples
        return total_diff, total_jac

    def _fooled(self, model: nn.Module, z: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Boolean ``(m,)``: ``z`` fools the model on each of ``eot_samples`` draws."""
        return eot_gradient(model, z, lambda logits: logits[:, 0], lambda logits: is_adversarial(logits, y, target),
                            samples=self.eot_samples, with_grad=False).fooled


@dataclass(frozen=True, kw_only=True)
class FABT(FAB):
    """FAB-T: FAB towards the boundary of one target class at a time; success is any misclassification.

    For each of the ``target_classes`` highest-scoring wrong classes ``t`` of the clean input (at
    most ``classes - 1``; by the mean logits over ``eot_samples`` draws), best first, ``restarts``
    runs follow the linearized boundary ``f_t - f_y = 0`` (one backward pass per step instead of
    ``classes - 1``). With an explicit ``target`` only that class is attacked, and success means
    reaching it. As in the reference's standard protocol (AutoAttack), ``target_classes=9``.

    Args:
        target_classes: how many target classes to try (9).
        Other arguments as in :class:`FAB`.
    """

    name: ClassVar[str] = "fab-t"
    target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(type(self).__name__, "target_classes", self.target_classes)

    def _planes(self, logits: Tensor, y: Tensor, target: Tensor | None) -> list[Tensor | None]:
        if target is not None:
            return [target] * self.restarts
        classes = logits.shape[1]
        wrong = logits.masked_fill(F.one_hot(y, classes).bool(), -math.inf)
        ranked = wrong.topk(min(self.target_classes, classes - 1), dim=1).indices
        return [ranked[:, k] for k in range(ranked.shape[1]) for _ in range(self.restarts)]
