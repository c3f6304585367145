"""DDN (attacks/ddn.py): validation, contract, quantization, zero gradients, EOT, and a cross-check with
Foolbox's DDNAttack (see tests/min_norm_utils.py for how)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from robustness.attacks import DDN
from robustness.errors import InputError
from robustness.norms import norm_of
from robustness.registry import ATTACKS
from tests.counting import Counting
from tests.min_norm_utils import check_contract, correct, foolbox_cross_check, predict


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "linf"}, r"DDN is an L2 attack.*FMN\(norm='linf'\)"),
        ({"norm": "l1"}, r"DDN is an L2 attack.*FMN\(norm='l1'\)"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"gamma": 0.0}, "gamma must be a finite number > 0"),
        ({"gamma": 1.5}, "gamma must be < 1"),
        ({"init_epsilon": -1.0}, "init_epsilon must be a finite number > 0"),
        ({"alpha_init": float("inf")}, "alpha_init must be a finite number > 0"),
        ({"levels": 1}, "levels must be an integer >= 2"),
        ({"levels": 255.0}, "levels must be an integer >= 2"),
        ({"eot_samples": 1.5}, "eot_samples must be an integer >= 1"),
    ],
)
def test_settings_are_validated(kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        DDN(**kwargs)


def test_registered_and_defaults() -> None:
    attack = ATTACKS.create("ddn")
    assert isinstance(attack, DDN) and attack.norm == "l2" and attack.kind == "minimization"
    assert (attack.steps, attack.gamma, attack.init_epsilon, attack.levels) == (100, 0.05, 1.0, None)


def test_contract_and_strength(trained_model, test_batch) -> None:
    x, y = test_batch  # includes a few inputs the model misclassifies: they must come back unchanged
    adv = DDN(steps=20)(trained_model, x, y)
    changed = check_contract(trained_model, x, y, adv, (0.0, 1.0))
    assert changed[predict(trained_model, x) == y].all()


def test_eps_and_determinism(trained_model, test_batch) -> None:
    x, y = correct(trained_model, *test_batch, n=48)
    full = DDN(steps=15)(trained_model, x, y)
    assert torch.equal(full, DDN(steps=15)(trained_model, x, y))
    assert torch.equal(full, DDN(steps=15, eot_samples=2)(trained_model, x, y))  # identical draws: same mean
    eps = float(norm_of(full - x, "l2").median())
    adv = DDN(steps=15)(trained_model, x, y, eps=eps)
    within = norm_of(full - x, "l2") <= eps
    assert torch.equal(adv, torch.where(within.view(-1, 1, 1, 1), full, x))


def test_eot_draws_per_step(trained_model, test_batch) -> None:
    x, y = correct(trained_model, *test_batch, n=8)
    model = Counting(trained_model)
    DDN(steps=4, eot_samples=3)(model, x, y)
    assert model.calls == 3 * (4 + 2)


def test_quantized_points_lie_on_the_grid(trained_model, test_batch) -> None:
    x, y = correct(trained_model, *test_batch, n=48)
    adv = DDN(steps=20, levels=256)(trained_model, x, y)
    changed = check_contract(trained_model, x, y, adv, (0.0, 1.0))
    assert changed.float().mean() > 0.9
    scaled = adv[changed] * 255
    assert (scaled - scaled.round()).abs().max() < 1e-3
    # without quantization the points are off the grid (the test above could not pass by accident)
    plain = DDN(steps=20)(trained_model, x, y)[changed] * 255
    assert (plain - plain.round()).abs().max() > 0.01


class _FlatAtZero(nn.Module):
    """Class 0 wins near x = 0 where the gradient is exactly 0; class 1 once ``sum(x) > 1.05``."""

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([torch.full_like(s, 0.5), 10 * torch.relu(s - 1.0)], dim=1)


def test_a_zero_gradient_does_not_stall_it() -> None:
    x = torch.zeros(4, 8)
    y = torch.zeros(4, dtype=torch.long)
    adv = DDN(steps=20)(_FlatAtZero(), x, y, generator=torch.Generator().manual_seed(1))
    assert (predict(_FlatAtZero(), adv) == 1).all()


def test_targeted_reaches_the_target(trained_model, test_batch) -> None:
    x, y = correct(trained_model, *test_batch, n=48)
    target = (y + 1 + torch.arange(len(y)) % 9) % 10
    adv = DDN(steps=30)(trained_model, x, y, target=target)
    changed = check_contract(trained_model, x, y, adv, (0.0, 1.0), target=target)
    assert changed.float().mean() > 0.9


def test_at_least_as_good_as_foolbox(trained_model, digits) -> None:
    """100 correctly classified test digits, 20 steps each."""
    fb = pytest.importorskip("foolbox")
    x, y = correct(trained_model, digits[2], digits[3], n=100)
    ours = DDN(steps=20)(trained_model, x, y)
    foolbox_cross_check(trained_model, x, y, ours, fb.attacks.DDNAttack(steps=20), "l2")


@pytest.mark.slow
def test_at_least_as_good_as_foolbox_full(trained_model, digits) -> None:
    """Every correctly classified test digit, 100 steps (the default)."""
    fb = pytest.importorskip("foolbox")
    x, y = correct(trained_model, digits[2], digits[3], n=len(digits[3]))
    ours = DDN()(trained_model, x, y)
    foolbox_cross_check(trained_model, x, y, ours, fb.attacks.DDNAttack(steps=100), "l2")
