"""FAB and FAB-T: validation, the boundary projection against a linear-program solver, the contract
per norm (bounds, verified successes, determinism, per-sample eps and early stop, EOT), and
cross-checks against the reference (pyautoattack's FABAttack_PT) and torchattacks' FAB."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustness.attacks import FAB, FABT
from robustness.attacks.fab import boundary_projection
from robustness.errors import InputError
from robustness.norms import norm_of
from tests.counting import Counting

NORMS = ("linf", "l2", "l1")
REF_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}
#: an eps large enough that the reference keeps every adversarial it finds (its minimal-norm mode)
HUGE = {"linf": 1.0, "l2": 100.0, "l1": 1000.0}
STEPS = 20  # the cross-checks' iterations: all three implementations converge on the digits model


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("cls", "kwargs", "match"), [
    (FAB, {"norm": "l3"}, "unknown norm"),
    (FAB, {"steps": 0}, "steps must be an integer >= 1"),
    (FAB, {"restarts": True}, "restarts must be an integer >= 1"),
    (FAB, {"alpha_max": 1.5}, r"alpha_max must lie in \[0.0, 1.0\]"),
    (FAB, {"eta": 0.0}, r"eta must lie in \(0.0"),
    (FAB, {"beta": 0.0}, r"beta must lie in \(0.0, 1.0\]"),
    (FAB, {"beta": float("nan")}, "beta must be a finite number"),
    (FAB, {"restart_radius": -1.0}, "restart_radius must lie in"),
    (FAB, {"exhaustive": 1}, "exhaustive must be True or False"),
    (FAB, {"eot_samples": 0}, "eot_samples must be an integer >= 1"),
    (FABT, {"target_classes": 0}, "target_classes must be an integer >= 1"),
])
def test_invalid_settings_say_what_to_fix(cls, kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        cls(**kwargs)


def test_settings_are_keyword_only_frozen_and_named_like_the_protocols_use_them() -> None:
    attack = FABT(steps=100, restarts=1, target_classes=9)
    assert (attack.norm, attack.alpha_max, attack.eta, attack.beta) == ("linf", 0.1, 1.05, 0.9)
    assert FAB(norm="L2").norm == "l2"
    with pytest.raises(TypeError):
        FAB("linf")  # type: ignore[misc]
    with pytest.raises(AttributeError):
        attack.steps = 3  # type: ignore[misc]


def test_a_one_logit_model_is_refused() -> None:
    x = torch.rand(3, 4)
    with pytest.raises(InputError, match="at least 2 classes"):
        FAB(steps=2)(nn.Linear(4, 1), x, torch.zeros(3, dtype=torch.long))


# --------------------------------------------------------------------------- the projection


def _optimum(p: np.ndarray, w: np.ndarray, c: float, low: float, high: float, norm: str) -> float | None:
    """The smallest norm of d with <w, d> = c and low <= p + d <= high, by an independent solver
    (scipy's linear programs for Linf and L1, a bisection on the KKT multiplier for L2); None: infeasible."""
    from scipy.optimize import linprog

    lo, hi = low - p, high - p
    dim = p.shape[0]
    if norm == "l2":
        v, gap = np.sign(c) * w, abs(c)
        if np.sum(np.where(v > 0, v * hi, v * lo)) < gap:
            return None
        a, b = 0.0, 1.0
        while np.sum(v * np.clip(b * v, lo, hi)) < gap:
            b *= 2
        for _ in range(200):
            mid = (a + b) / 2
            a, b = (mid, b) if np.sum(v * np.clip(mid * v, lo, hi)) < gap else (a, mid)
        return float(np.linalg.norm(np.clip(b * v, lo, hi)))
    if norm == "linf":  # variables (d, r): min r, -r <= d_i <= r
        cost = np.r_[np.zeros(dim), 1.0]
        eye = np.eye(dim)
        a_ub = np.block([[eye, -np.ones((dim, 1))], [-eye, -np.ones((dim, 1))]])
        res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * dim), A_eq=np.r_[w, 0.0][None], b_eq=[c],
                      bounds=[*zip(lo, hi), (0, None)], method="highs")
    else:  # d = u - v, u, v >= 0: min sum(u + v)
        res = linprog(np.ones(2 * dim), A_eq=np.r_[w, -w][None], b_eq=[c],
                      bounds=[*((0, max(h, 0)) for h in hi), *((0, max(-l_, 0)) for l_ in lo)], method="highs")
    return float(res.fun) if res.status == 0 else None


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_is_the_smallest_step_onto_the_hyperplane_in_the_box(norm, dtype) -> None:
    g = torch.Generator().manual_seed(7)
    n, dim, low, high = 24, 9, -0.5, 1.5
    p = low + (high - low) * torch.rand(n, dim, generator=g, dtype=dtype)
    p[:5, :4] = high  # coordinates at a bound: they cannot move up
    w = torch.randn(n, dim, generator=g, dtype=dtype)
    w[5:10, ::2] = 0  # coordinates the hyperplane ignores
    c = torch.randn(n, generator=g, dtype=dtype) * 2
    c[-3:] *= 100  # out of the box's reach
    d = boundary_projection(p, w, c, (low, high), norm)
    assert d.dtype == dtype
    assert torch.all(p + d >= low - 1e-6) and torch.all(p + d <= high + 1e-6)
    size = norm_of(d, norm)
    infeasible = 0
    for i in range(n):
        best = _optimum(p[i].double().numpy(), w[i].double().numpy(), float(c[i]), low, high, norm)
        if best is None:  # the corner of the box that moves <w, .> furthest towards c
            infeasible += 1
            corner = torch.where(torch.sign(c[i]) * w[i] > 0, high - p[i], low - p[i]) * (w[i] != 0)
            torch.testing.assert_close(d[i], corner)
            continue
        assert float((w[i] * d[i]).sum()) == pytest.approx(float(c[i]), rel=1e-4, abs=1e-4)
        assert float(size[i]) == pytest.approx(best, rel=1e-4, abs=1e-5)
    assert 3 <= infeasible < n  # both cases were exercised


def test_projection_of_a_point_on_the_hyperplane_is_zero() -> None:
    p = torch.rand(4, 6)
    w = torch.randn(4, 6)
    for norm in NORMS:
        assert torch.equal(boundary_projection(p, w, torch.zeros(4), (0.0, 1.0), norm), torch.zeros(4, 6))


# --------------------------------------------------------------------------- the attack on the digits model


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("cls", [FAB, FABT])
def test_in_bounds_verified_and_deterministic(cls, norm, trained_model, test_batch) -> None:
    x, y = test_batch[0][:48], test_batch[1][:48]
    # inputs in [-1, 1]: the model maps them back, so that the bounds are not the usual [0, 1]
    model = nn.Sequential(_Affine(0.5, 0.5), trained_model)
    xs, bounds = 2 * x - 1, (-1.0, 1.0)
    attack = cls(norm=norm, steps=10, restarts=2, exhaustive=True, **({"target_classes": 3} if cls is FABT else {}))
    first = attack(model, xs, y, bounds=bounds, generator=torch.Generator().manual_seed(1))
    again = attack(model, xs, y, bounds=bounds, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert first.shape == xs.shape and first.dtype == xs.dtype
    assert torch.all(first >= -1) and torch.all(first <= 1)
    changed = (first != xs).flatten(1).any(1)
    with torch.no_grad():
        wrong = model(first).argmax(1) != y
    assert changed.sum() >= 40  # it finds adversarials on the trained model
    assert torch.all(wrong[changed])  # every returned perturbation fools the model
    assert torch.equal(first[~changed], xs[~changed])


class _Affine(nn.Module):
    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def test_float64_inputs_stay_float64(trained_model, test_batch) -> None:
    x, y = test_batch[0][:16].double(), test_batch[1][:16]
    adv = FAB(norm="l2", steps=5)(trained_model.double(), x, y)
    assert adv.dtype == torch.float64
    assert (adv != x).flatten(1).any(1).sum() > 8


def test_misclassified_inputs_come_back_unchanged(trained_model, test_batch) -> None:
    x, y = test_batch[0][:16], test_batch[1][:16].clone()
    with torch.no_grad():
        pred = trained_model(x).argmax(1)
    y[:4] = (pred[:4] + 1) % 10  # wrong labels: these inputs are adversarial already
    adv = FAB(norm="linf", steps=5)(trained_model, x, y)
    assert torch.equal(adv[:4], x[:4])


def test_explicit_target_is_reached(trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    target = (y + 3) % 10
    for cls in (FAB, FABT):
        adv = cls(norm="l2", steps=30)(trained_model, x, y, target=target)
        changed = (adv != x).flatten(1).any(1)
        with torch.no_grad():
            pred = trained_model(adv).argmax(1)
        assert changed.sum() >= 16
        assert torch.all(pred[changed] == target[changed])


def test_per_sample_eps_stops_early_and_stays_within(trained_model, test_batch) -> None:
    """A cascade passes each sample its own budget: samples broken within it leave the run, so the
    model sees fewer samples than in the full minimization, and what comes back is within each budget."""
    x, y = test_batch[0][:32], test_batch[1][:32]
    attack = FAB(norm="l2", steps=20)
    full_model = Counting(trained_model)
    smallest = attack(full_model, x, y)
    found = norm_of(smallest - x, "l2")
    eps = torch.where(torch.arange(32) % 2 == 0, torch.tensor(5.0), torch.tensor(0.3))  # large, or below most
    counted = Counting(trained_model)
    adv = attack(counted, x, y, eps=eps)
    size = norm_of(adv - x, "l2")
    assert torch.all(size <= eps * (1 + 1e-6))
    assert counted.samples < 0.7 * full_model.samples
    broken = (adv != x).flatten(1).any(1)
    assert broken[::2].sum() >= 14  # the large budgets: nearly all broken
    # the small budget cannot break more samples than the full search found within it (give or take a few)
    assert broken[1::2].sum() <= int((found[1::2] <= 0.3).sum()) + 2


def test_zero_budgets_are_not_searched(trained_model, test_batch) -> None:
    x, y = test_batch[0][:8], test_batch[1][:8]
    counted = Counting(trained_model)
    eps = torch.tensor([0.0] * 7 + [5.0])
    adv = FAB(norm="l2", steps=10)(counted, x, y, eps=eps)
    assert torch.equal(adv[:7], x[:7])
    assert counted.samples <= 8 + 2 * 10 * 1 + 8  # the clean check, one sample's steps, the verification


def test_float_eps_is_the_restart_radius_and_stops_runs(trained_model, test_batch) -> None:
    """With eps, later runs attack only the samples not broken within it (as the reference)."""
    x, y = test_batch[0][:32], test_batch[1][:32]
    counted = Counting(trained_model)
    FAB(norm="linf", steps=10, restarts=3)(counted, x, y, eps=1.0)
    exhaustive = Counting(trained_model)
    FAB(norm="linf", steps=10, restarts=3, exhaustive=True)(exhaustive, x, y)
    assert counted.samples < exhaustive.samples / 3


def test_exhaustive_restarts_only_shrink_the_norms(trained_model, test_batch) -> None:
    x, y = test_batch[0][:48], test_batch[1][:48]
    one = norm_of(FAB(norm="l1", steps=10)(trained_model, x, y) - x, "l1")
    more = norm_of(FAB(norm="l1", steps=10, restarts=3, exhaustive=True)(trained_model, x, y) - x, "l1")
    found = one > 0
    assert torch.all(more[found] <= one[found] + 1e-6)
    assert torch.any(more[found] < one[found] * 0.99)  # the restarts found smaller ones


def test_eot_on_a_deterministic_model_changes_nothing_but_the_cost(trained_model, test_batch) -> None:
    x, y = test_batch[0][:16], test_batch[1][:16]
    for cls, kwargs in ((FAB, {}), (FABT, {"target_classes": 2})):
        one, two = Counting(trained_model), Counting(trained_model)
        a = cls(norm="linf", steps=5, **kwargs)(one, x, y)
        b = cls(norm="linf", steps=5, eot_samples=2, **kwargs)(two, x, y)  # (g + g) / 2 == g exactly
        assert torch.equal(a, b)
        assert two.calls == 2 * one.calls


class _Flicker(nn.Module):
    """Right (a huge logit on ``y``) on the first two forward calls and on every odd one, wrong on the others."""

    def __init__(self, y: torch.Tensor) -> None:
        super().__init__()
        self.y, self.calls = y, 0
        self.lin = nn.Linear(64, 10)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        sign = 1.0 if self.calls <= 2 or self.calls % 2 else -1.0
        return self.lin(z.flatten(1)) + sign * 1e3 * nn.functional.one_hot(self.y, 10).to(z.dtype)


def test_eot_success_needs_every_draw(test_batch) -> None:
    """Clean: right on both draws; later, every pair of draws holds one wrong answer and one right one:
    counted as fooled on any draw, every sample would come back changed; on every draw, none does."""
    x, y = test_batch[0][:8], test_batch[1][:8]
    assert torch.equal(FAB(norm="l2", steps=3, eot_samples=2)(_Flicker(y), x, y), x)


# --------------------------------------------------------------------------- cross-checks


def _successes_and_median(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, norm: str
                          ) -> tuple[int, float]:
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    size = norm_of(adv - x, norm)
    ok = fooled & (size > 0)
    return int(ok.sum()), float(size[ok].median())


def _assert_at_least_as_good(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ours: torch.Tensor,
                             theirs: torch.Tensor, norm: str) -> None:
    """At least as many successes, and a median norm at most 2% larger (the issue's targets)."""
    ours_n, ours_median = _successes_and_median(model, x, y, ours, norm)
    their_n, their_median = _successes_and_median(model, x, y, theirs, norm)
    assert ours_n >= their_n
    assert ours_median <= 1.02 * their_median, (ours_median, their_median)


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep], y[keep]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("targeted", [False, True])
def test_at_least_as_good_as_the_reference(norm, targeted, trained_model, test_batch) -> None:
    from pyautoattack.fab_pt import FABAttack_PT

    x, y = _correct(trained_model, *test_batch)
    ours = (FABT if targeted else FAB)(norm=norm, steps=STEPS)(trained_model, x, y)
    reference = FABAttack_PT(trained_model, norm=REF_NORM[norm], n_restarts=1, n_iter=STEPS, eps=HUGE[norm],
                             targeted=targeted, n_target_classes=9, device="cpu")
    with torch.random.fork_rng():  # the reference reseeds the global generator
        theirs = reference.perturb(x, y)
    _assert_at_least_as_good(trained_model, x, y, ours, theirs, norm)


@pytest.mark.parametrize("norm", ["linf", "l2"])  # torchattacks' FAB fails on L1 (UnboundLocalError in perturb)
@pytest.mark.parametrize("targeted", [False, True])
def test_at_least_as_good_as_torchattacks(norm, targeted, trained_model, test_batch) -> None:
    import torchattacks

    x, y = _correct(trained_model, *test_batch)
    ours = (FABT if targeted else FAB)(norm=norm, steps=STEPS)(trained_model, x, y)
    peer = torchattacks.FAB(trained_model, norm=REF_NORM[norm], eps=HUGE[norm], steps=STEPS, n_restarts=1,
                            multi_targeted=targeted, n_classes=10)
    with torch.random.fork_rng():  # torchattacks reseeds the global generator
        theirs = peer(x, y)
    _assert_at_least_as_good(trained_model, x, y, ours, theirs, norm)
