"""The contract every registered attack keeps, checked over random shapes, budgets and bounds
(hypothesis), plus strength and determinism on a trained model.

Minimization attacks (Carlini-Wagner, FMN, DDN) are covered by the same tests, called with
``eps``: the base class keeps only their perturbations within it, so the budget, the bounds, the
strength and the determinism are checked as for a fixed-budget attack, in every norm the attack
accepts (one that refuses a norm at construction, with an ``InputError``, is skipped there).
``test_minimization_answers_every_budget`` adds what is theirs alone: without ``eps`` every
changed input is adversarial and the inputs misclassified already come back unchanged, and one
call with ``eps`` returns exactly the unrestricted result where it is within ``eps`` and the clean
input elsewhere (for attacks that do not declare ``stops_at_eps``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustness.attacks.base import ATTACK_KINDS, L1_ATTACKS, MinimizationAttack
from robustness.errors import InputError
from robustness.norms import norm_of
from robustness.registry import ATTACKS

NAMES = ATTACKS.list()
TOL = 1e-5


# few steps: the contract, not the strength, is what most of these tests check
MINIMIZATION_SETTINGS = {"cw": {"binary_search_steps": 2, "steps": 10}, "fmn": {"steps": 10}, "ddn": {"steps": 10}}


def _build(name: str, norm: str):
    if norm == "l1" and name not in L1_ATTACKS:  # refused with a clear error (checked below)
        return None
    cls = ATTACKS.load(name)
    if name in ("fab", "fab-t"):  # minimization attacks in every norm
        return ATTACKS.create(name, norm=norm, steps=10)
    if issubclass(cls, MinimizationAttack):
        try:
            return ATTACKS.create(name, norm=norm, **MINIMIZATION_SETTINGS.get(name, {}))
        except InputError:  # the attack does not work in this norm (e.g. Carlini-Wagner in linf)
            return None
    settings = {"pgd": {"steps": 3}, "apgd-ce": {"steps": 5}, "apgd-dlr": {"steps": 5}, "apgd-t": {"steps": 5, "target_classes": 2},
                "square": {"queries": 200}}.get(name, {})
    return ATTACKS.create(name, norm=norm, **settings)


class Linear(nn.Module):
    def __init__(self, features: int, classes: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(features, classes, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("name", NAMES)
def test_declares_a_kind(name) -> None:
    """The sanity checks pick what to compare each attack with by its declared kind."""
    cls = ATTACKS.load(name)
    assert cls.kind in ATTACK_KINDS
    assert (cls.kind == "minimization") == issubclass(cls, MinimizationAttack)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 6),
    shape=st.sampled_from([(1, 4, 4), (3, 2, 5), (7,)]),
    low=st.floats(-2.0, 1.0),
    width=st.floats(0.1, 3.0),
    eps_frac=st.floats(0.0, 1.5),
    seed=st.integers(0, 2**16),
)
def test_inside_budget_and_bounds(name, norm, n, shape, low, width, eps_frac, seed) -> None:
    attack = _build(name, norm)
    if attack is None:
        pytest.skip(f"{name} does not work in {norm}")
    high = low + width
    g = torch.Generator().manual_seed(seed)
    x = low + width * torch.rand((n, *shape), generator=g)
    numel = torch.tensor(shape).prod().item()
    if attack.needs_images and len(shape) != 3:  # e.g. Square: a clear error, not a wrong answer
        with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
            attack(Linear(int(numel), 3, seed), x, torch.zeros(n, dtype=torch.long), eps=1.0, bounds=(low, high))
        return
    eps = eps_frac * width * {"linf": 1.0, "l2": numel**0.5, "l1": numel}[norm]
    model = Linear(int(numel), 4, seed)  # 4 classes: the fewest that targeted DLR (APGD-T) accepts
    y = torch.randint(0, 4, (n,), generator=g)
    x_adv = attack(model, x, y, eps=eps, bounds=(low, high), generator=torch.Generator().manual_seed(seed))
    assert x_adv.shape == x.shape
    assert torch.all(x_adv >= low - TOL) and torch.all(x_adv <= high + TOL)
    assert torch.all(norm_of(x_adv - x, norm) <= eps * (1 + TOL) + TOL)


def _default_norm(name: str) -> str:
    return "l2" if issubclass(ATTACKS.load(name), MinimizationAttack) else "linf"


@pytest.mark.parametrize(("name", "norm"), [(n, _default_norm(n)) for n in NAMES] + [(n, "l1") for n in L1_ATTACKS])
def test_lowers_accuracy_and_is_deterministic(name, norm, trained_model, test_batch) -> None:
    x, y = test_batch
    attack = _build(name, norm)
    eps = {"linf": 0.2, "l2": 1.5, "l1": 2.0}[norm]  # L1: of the 64-pixel box's L1 diameter 64
    clean = (trained_model(x).argmax(1) == y).float().mean()
    first = attack(trained_model, x, y, eps=eps, generator=torch.Generator().manual_seed(3))
    second = attack(trained_model, x, y, eps=eps, generator=torch.Generator().manual_seed(3))
    robust = (trained_model(first).argmax(1) == y).float().mean()
    assert torch.equal(first, second)
    assert torch.all(norm_of(first - x, norm) <= eps * (1 + TOL) + TOL)
    assert robust < clean - 0.3, f"{name} ({norm}): clean {clean:.3f}, robust {robust:.3f}"


MINIMIZERS = [name for name in NAMES if issubclass(ATTACKS.load(name), MinimizationAttack)]


@pytest.mark.parametrize("name", MINIMIZERS)
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_minimization_answers_every_budget(name, norm, trained_model, test_batch) -> None:
    attack = _build(name, norm)
    if attack is None:
        pytest.skip(f"{name} does not work in {norm}")
    x, y = test_batch
    clean_wrong = trained_model(x).argmax(1) != y
    assert clean_wrong.any()  # the batch holds inputs misclassified already: they must come back unchanged
    full = attack(trained_model, x, y, generator=torch.Generator().manual_seed(3))
    changed = (full != x).flatten(1).any(dim=1)
    assert (trained_model(full[changed]).argmax(1) != y[changed]).all()
    assert not changed[clean_wrong].any()
    assert changed.sum() > 0.8 * x.shape[0]
    sizes = norm_of(full - x, norm)
    eps = float(sizes[changed].median())
    capped = attack(trained_model, x, y, eps=eps, generator=torch.Generator().manual_seed(3))
    assert torch.all(norm_of(capped - x, norm) <= eps * (1 + TOL))
    if not type(attack).stops_at_eps:
        assert torch.equal(capped, torch.where((sizes <= eps).view(-1, 1, 1, 1), full, x))


def test_every_l1_attack_is_registered_and_the_others_refuse_l1() -> None:
    """The L1 attacks the errors name exist; every other attack refuses L1 with an error naming them."""
    assert set(L1_ATTACKS) <= set(NAMES)
    for name in sorted(set(NAMES) - set(L1_ATTACKS)):
        with pytest.raises(InputError, match="apgd-ce"):
            ATTACKS.create(name, norm="l1")
