"""The contract every registered fixed-budget attack keeps, checked over random shapes,
budgets and bounds (hypothesis), plus strength and determinism on a trained model."""

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


def _build(name: str, norm: str):
    if norm == "l1" and name not in L1_ATTACKS:  # refused with a clear error (checked below)
        return None
    cls = ATTACKS.load(name)
    if issubclass(cls, MinimizationAttack):
        kwargs = {"binary_search_steps": 2, "steps": 10} if name == "cw" else {}
        return ATTACKS.create(name, **kwargs) if norm == "l2" else None
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


def test_every_l1_attack_is_registered_and_the_others_refuse_l1() -> None:
    """The L1 attacks the errors name exist; every other attack refuses L1 with an error naming them."""
    assert set(L1_ATTACKS) <= set(NAMES)
    for name in sorted(set(NAMES) - set(L1_ATTACKS)):
        with pytest.raises(InputError, match="apgd-ce"):
            ATTACKS.create(name, norm="l1")
