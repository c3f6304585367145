"""One attack over a sweep of budgets on one batch, verified by the runner, per sample.

* :func:`sweep_fixed` (FGSM, PGD, APGD, Square, ...; ``schedule="ascending"``, the default):
  budgets in increasing order; a sample broken inside a smaller ball counts as broken inside
  every larger one, so each budget only attacks the samples this attack has not broken yet,
  starting from the best point it found for them at the previous budget (inside the larger
  ball). Those warm-start chains make it the strongest schedule.
* :func:`sweep_bisect` (``schedule="bisect"``): bisection over the budgets per sample, also
  taking a sample the attack could not break inside a larger ball as robust inside every
  smaller one: about ``log2(budgets + 1)`` attacks per sample, for long sweeps and big models.
* :func:`sweep_minimization` (Carlini-Wagner): one run; each budget counts the verified
  adversarial inputs whose perturbation fits in it. Told the largest budget (attacks that
  declare ``stops_at_eps`` then stop early), except for the robustness curve (``curve=True``):
  run without a budget, for each sample's smallest perturbation.

Every result also holds each sample's verified adversarial ``distance`` (the smallest
perturbation norm this attack was verified to break it with; infinite where it found none);
with ``curve=True`` a fixed-budget attack's ``broken`` also counts a sample broken at the smallest
budget that holds that distance (an attack may break a sample at one budget with a perturbation
that fits in a smaller one), so that the per-budget tables and the curve agree.

Whatever the attack returns is projected onto the budget, clipped to the bounds and
re-predicted here; only verified misclassifications count.

Cascade (``cascade_from``, :func:`robustness.evaluate`'s ``cascade``): per sample, the index of the
smallest budget at which the earlier attacks of the evaluation broke it. The attack then never
works on a sample at a budget where it is broken already: the ascending sweep drops it from that
budget on, the bisection searches below that budget only, and a minimization attack gets the
largest budget at which the sample is still unbroken as its per-sample ``eps`` (samples broken at
every budget are not attacked).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustness.attacks.base import Attack, MinimizationAttack
from robustness.errors import InputError, RobustnessWarning
from robustness.norms import Norm, clip_to_bounds, norm_of, project
from robustness.seeding import derive_seed

__all__ = ["SCHEDULES", "SweepResult", "first_budget_within", "sweep", "sweep_bisect", "sweep_fixed",
           "sweep_minimization"]

#: how a fixed-budget attack visits the budgets (see :func:`sweep`)
SCHEDULES: tuple[str, ...] = ("ascending", "bisect")


@dataclass
class SweepResult:
    """Per-sample outcome of one attack on one batch.

    ``broken[i]``: index into the budgets of the smallest budget at which sample ``i`` was broken
    (``len(budgets)``: never, or misclassified clean: never attacked). ``size[i]``: norm of the
    verified adversarial perturbation at that budget (NaN where not broken). ``adversarial``:
    the verified adversarial input where broken, the clean input elsewhere. ``prediction``: the
    model's prediction on that adversarial input (-1 where not broken). ``max_used[j]``: the
    largest perturbation norm the attack returned at budget ``j``. ``distance[i]``: the smallest
    norm of a verified adversarial perturbation of sample ``i`` found (``inf``: none; a
    minimization attack's may lie beyond every budget).
    """

    broken: Tensor
    size: Tensor
    adversarial: Tensor
    prediction: Tensor
    max_used: list[float]
    distance: Tensor


def _empty(x: Tensor, budgets: list[float]) -> SweepResult:
    n = x.shape[0]
    return SweepResult(
        broken=torch.full((n,), len(budgets), dtype=torch.long, device=x.device),
        size=torch.full((n,), math.nan, dtype=x.dtype, device=x.device),
        adversarial=x.clone(),
        prediction=torch.full((n,), -1, dtype=torch.long, device=x.device),
        max_used=[0.0] * len(budgets),
        distance=torch.full((n,), math.inf, dtype=torch.float64, device=x.device),
    )


def _checked(attack: Attack, x_adv: object, like: Tensor) -> Tensor:
    if not isinstance(x_adv, Tensor) or x_adv.shape != like.shape:
        raise InputError(f"attack {attack.describe()} returned {getattr(x_adv, 'shape', type(x_adv))}, "
                         f"expected a tensor of shape {tuple(like.shape)}")
    x_adv = x_adv.detach().to(like.dtype)
    finite = torch.isfinite(x_adv).flatten(1).all(dim=1)
    if not bool(finite.all()):  # a NaN input "fools" a model by accident: never count it as broken
        warnings.warn(f"attack {attack.label} returned NaN or infinite values for {int((~finite).sum())} of "
                      f"{like.shape[0]} inputs; they count as not broken there (the clean input is kept). "
                      "The attack is numerically unstable on this model: check its dtype (float32) and logits",
                      RobustnessWarning, stacklevel=2)
        x_adv = torch.where(finite.view((-1,) + (1,) * (like.dim() - 1)), x_adv, like)
    return x_adv


def _attack_at(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    idx: Tensor,
    i: int,
    eps: float,
    init: Tensor | None,
    gen: torch.Generator,
    out: SweepResult,
    bounds: tuple[float, float],
    norm: Norm,
) -> tuple[Tensor, Tensor]:
    """Attack samples ``idx`` at budget ``i``, verify, and record the ones broken; returns
    ``(fooled, x_adv)`` for ``idx``."""
    x0, y0 = x[idx], y[idx]
    x_adv = _checked(attack, attack(model, x0, y0, eps=eps, bounds=bounds, generator=gen, init=init), x0)
    x_adv = clip_to_bounds(project(x_adv, x0, eps, norm), bounds)  # never trusted
    with torch.no_grad():
        pred = model(x_adv).argmax(dim=1)
    fooled = pred != y0
    sizes = norm_of(x_adv - x0, norm)
    out.max_used[i] = max(out.max_used[i], float(sizes.max()))
    hit = idx[fooled]
    out.broken[hit] = i
    out.size[hit] = sizes[fooled]
    out.adversarial[hit] = x_adv[fooled]
    out.prediction[hit] = pred[fooled]
    # verified inside the eps ball (projected above): a norm a rounding error above eps is eps
    out.distance[hit] = torch.minimum(out.distance[hit], sizes[fooled].double().clamp(max=eps))
    return fooled, x_adv


def sweep_fixed(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    budgets: list[float],
    *,
    bounds: tuple[float, float],
    norm: Norm,
    seed: int,
    cascade_from: Tensor | None = None,
) -> SweepResult:
    """Sweep ``budgets`` upwards, attacking only the correct samples this attack has not broken yet
    (and, in a cascade, that the earlier attacks have not broken at that budget)."""
    out = _empty(x, budgets)
    alive = correct.nonzero().squeeze(1)
    previous: Tensor | None = None  # the best point of each survivor at the previous budget
    for i, eps in enumerate(budgets):
        if cascade_from is not None:
            keep = cascade_from[alive] > i
            alive = alive[keep]
            previous = None if previous is None else previous[keep]
        if alive.numel() == 0:
            break
        gen = torch.Generator(device=x.device).manual_seed(derive_seed(seed, "budget", i))
        fooled, x_adv = _attack_at(model, attack, x, y, alive, i, eps, previous, gen, out, bounds, norm)
        alive, previous = alive[~fooled], x_adv[~fooled]  # warm start: the next ball contains this point
    return out


def sweep_bisect(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    budgets: list[float],
    *,
    bounds: tuple[float, float],
    norm: Norm,
    seed: int,
    cascade_from: Tensor | None = None,
) -> SweepResult:
    """Find each sample's smallest breaking budget by bisection over the budget indices.

    Per sample, ``lo`` is the largest budget known robust (the attack failed there, so it is
    taken as robust at every smaller one) and ``hi`` the smallest known broken; each round
    attacks every undecided sample at ``(lo + hi) // 2``, starting from its most informative
    point: the best point found at ``lo`` (inside the larger ball) or the adversarial input
    found at ``hi`` (projected into the smaller ball). About ``log2(len(budgets) + 1)`` attacks
    per sample instead of up to ``len(budgets)``, at the price of the long warm-start chains
    of the ascending sweep, which make it stronger at the middle budgets.
    """
    out = _empty(x, budgets)
    k = len(budgets)
    n = x.shape[0]
    lo = torch.full((n,), -1, dtype=torch.long, device=x.device)
    hi = torch.full((n,), k, dtype=torch.long, device=x.device)
    if cascade_from is not None:  # known broken there by earlier attacks: search below it only
        hi = torch.minimum(hi, cascade_from)
    start = x.clone()  # each sample's most informative point so far
    for r in range(k + 1):  # bisection ends in ceil(log2(k + 1)) rounds; k + 1 bounds it anyway
        todo = correct & (hi - lo > 1)
        if not bool(todo.any()):
            break
        mid = torch.div(lo + hi, 2, rounding_mode="floor")
        for i, eps in enumerate(budgets):
            idx = (todo & (mid == i)).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            # round 0 draws what the ascending sweep draws at budget i: one budget, one result
            index = (i,) if r == 0 else (i, r)
            gen = torch.Generator(device=x.device).manual_seed(derive_seed(seed, "budget", *index))
            init = start[idx] if r > 0 else None  # the attack projects it into this ball
            fooled, x_adv = _attack_at(model, attack, x, y, idx, i, eps, init, gen, out, bounds, norm)
            hi[idx[fooled]] = i
            lo[idx[~fooled]] = i
            start[idx] = x_adv
    return out


def sweep_minimization(
    model: nn.Module,
    attack: MinimizationAttack,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    budgets: list[float],
    *,
    bounds: tuple[float, float],
    norm: Norm,
    seed: int,
    curve: bool = False,
    cascade_from: Tensor | None = None,
) -> SweepResult:
    """Run once; each budget counts the verified adversarial inputs whose perturbation fits in it.

    The attack is told the largest budget (``eps=max(budgets)``; per sample in a cascade: the largest
    at which the sample is still unbroken), so that one that declares ``stops_at_eps`` stops where
    nothing changes; except with ``curve=True``, where it runs without one on every correctly
    classified sample for each sample's smallest perturbation (``distance``), also beyond every
    budget: a cascade does not narrow it then, since the curve needs every sample's distance.
    """
    out = _empty(x, budgets)
    todo = correct if cascade_from is None or curve else correct & (cascade_from > 0)
    alive = todo.nonzero().squeeze(1)
    if alive.numel() == 0 or not (budgets or curve):
        return out
    gen = torch.Generator(device=x.device).manual_seed(seed)
    x0, y0 = x[alive], y[alive]
    eps: float | Tensor | None = None
    if not curve:
        eps = max(budgets)
        if cascade_from is not None:
            eps = torch.tensor(budgets, device=x.device, dtype=x.dtype)[cascade_from[alive] - 1]
    x_adv = clip_to_bounds(_checked(attack, attack(model, x0, y0, eps=eps, bounds=bounds, generator=gen), x0),
                           bounds)
    with torch.no_grad():
        pred = model(x_adv).argmax(dim=1)
    fooled = pred != y0
    size = norm_of(x_adv - x0, norm)
    out.distance[alive[fooled]] = size[fooled].double()
    if not budgets:  # the curve alone: nothing to count per budget
        return out
    eps_t = torch.tensor(budgets, device=x.device, dtype=torch.float64)  # as the report's budgets and the curve
    fits = fooled[:, None] & (size.double()[:, None] <= eps_t[None, :])  # (n, budgets), monotone in the budget
    ok = fits.any(dim=1)
    first = torch.where(ok, fits.float().argmax(dim=1), torch.full_like(alive, len(budgets)))
    out.broken[alive] = first
    hit = alive[ok]
    out.size[hit] = size[ok]
    out.adversarial[hit] = x_adv[ok]
    out.prediction[hit] = pred[ok]
    for i in range(len(budgets)):
        used = size[fits[:, i]]
        if used.numel():
            out.max_used[i] = float(used.max())
    return out


def first_budget_within(distance: Tensor, budgets: list[float]) -> Tensor:
    """Per sample, the index of the smallest budget ``>= distance`` (``len(budgets)``: none; an
    infinite distance never fits)."""
    eps_t = torch.tensor(budgets, device=distance.device, dtype=torch.float64)
    return torch.searchsorted(eps_t, distance.double().contiguous(), right=False)


def sweep(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    budgets: list[float],
    *,
    bounds: tuple[float, float],
    norm: Norm,
    seed: int,
    schedule: str = "ascending",
    curve: bool = False,
    cascade_from: Tensor | None = None,
) -> SweepResult:
    """:func:`sweep_minimization` for minimization attacks; for the others :func:`sweep_fixed`
    (``schedule="ascending"``, the default: strongest) or :func:`sweep_bisect` (``"bisect"``: fewer
    attacks per sample). ``curve=True`` (the robustness curve): minimization attacks run without a
    budget, even with no budgets listed, and a fixed-budget attack's sample counts as broken at the
    smallest budget that holds its verified distance. ``cascade_from``: see the module docstring."""
    if isinstance(attack, MinimizationAttack):
        if not budgets and not curve:
            return _empty(x, budgets)
        return sweep_minimization(model, attack, x, y, correct, budgets, bounds=bounds, norm=norm, seed=seed,
                                  curve=curve, cascade_from=cascade_from)
    if not budgets:
        return _empty(x, budgets)
    run = sweep_bisect if schedule == "bisect" else sweep_fixed
    out = run(model, attack, x, y, correct, budgets, bounds=bounds, norm=norm, seed=seed, cascade_from=cascade_from)
    if curve:
        out.broken = torch.minimum(out.broken, first_budget_within(out.distance, budgets))
    return out
