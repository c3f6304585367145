"""FMN (attacks/fmn.py): validation, contract, scale equivariance, EOT, warm start, and a cross-check
with Foolbox's LInfFMNAttack / L2FMNAttack / L1FMNAttack (see tests/min_norm_utils.py for how)."""

from __future__ import annotations

import pytest
import torch

from robustness.attacks import DDN, FMN, PGD
from robustness.errors import InputError
from robustness.norms import norm_of
from robustness.registry import ATTACKS
from tests.counting import Counting
from tests.min_norm_utils import Rescaled, check_contract, correct, foolbox_cross_check, predict

NORMS = ("linf", "l2", "l1")
FOOLBOX = {"linf": "LInfFMNAttack", "l2": "L2FMNAttack", "l1": "L1FMNAttack"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "l0"}, "unknown norm"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"steps": True}, "steps must be an integer"),
        ({"alpha_init": 0.0}, "alpha_init must be a finite number > 0"),
        ({"alpha_final": float("nan")}, "alpha_final must be a finite number > 0"),
        ({"gamma_init": 1.0}, "gamma_init must be < 1"),
        ({"gamma_final": -0.1}, "gamma_final must be a finite number > 0"),
        ({"binary_search_steps": 0}, "binary_search_steps must be an integer >= 1"),
        ({"eot_samples": 0}, "eot_samples must be an integer >= 1"),
        ({"init_attack": PGD()}, "init_attack must be a minimization attack"),
    ],
)
def test_settings_are_validated(kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        FMN(**kwargs)


def test_registered_and_defaults() -> None:
    attack = ATTACKS.create("fmn", norm="L1")
    assert isinstance(attack, FMN) and attack.norm == "l1" and attack.kind == "minimization"
    assert (FMN().steps, FMN().gamma_init, FMN().gamma_final, FMN().alpha_init) == (100, 0.05, 0.001, 1.0)


def test_model_without_logits_is_refused() -> None:
    with pytest.raises(InputError, match="logits"):
        FMN(steps=2)(lambda z: z.flatten(1).sum(1), torch.rand(3, 4), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("norm", NORMS)
def test_contract_and_strength(norm, trained_model, test_batch) -> None:
    x, y = test_batch  # includes a few inputs the model misclassifies: they must come back unchanged
    adv = FMN(norm=norm, steps=20)(trained_model, x, y)
    changed = check_contract(trained_model, x, y, adv, (0.0, 1.0))
    correct_ = predict(trained_model, x) == y
    assert changed[correct_].float().mean() > 0.95


def test_scale_equivariant_in_other_bounds(trained_model, test_batch) -> None:
    """Steps are in units of the bounds' width: in [-1, 1] the same path, twice as long."""
    x, y = correct(trained_model, *test_batch, n=48)
    attack = FMN(norm="l2", steps=15)
    adv01 = attack(trained_model, x, y)
    adv11 = attack(Rescaled(trained_model), 2 * x - 1, y, bounds=(-1.0, 1.0))
    check_contract(Rescaled(trained_model), 2 * x - 1, y, adv11, (-1.0, 1.0))
    ratio = norm_of(adv11 - (2 * x - 1), "l2").median() / (2 * norm_of(adv01 - x, "l2").median())
    assert 0.99 < float(ratio) < 1.01


def test_eps_keeps_only_perturbations_within_it(trained_model, test_batch) -> None:
    x, y = correct(trained_model, *test_batch, n=48)
    attack = FMN(norm="linf", steps=15)
    full = attack(trained_model, x, y)
    eps = float(norm_of(full - x, "linf").median())
    adv = attack(trained_model, x, y, eps=eps)
    within = norm_of(full - x, "linf") <= eps
    assert torch.equal(adv, torch.where(within.view(-1, 1, 1, 1), full, x))
    assert 16 <= int(within.sum()) < x.shape[0]


def test_deterministic_and_eot_of_a_deterministic_model_changes_nothing(trained_model, test_batch) -> None:
    x, y = correct(trained_model, *test_batch, n=32)
    first = FMN(norm="l1", steps=10)(trained_model, x, y)
    assert torch.equal(first, FMN(norm="l1", steps=10)(trained_model, x, y))
    # the mean of two identical gradients is the gradient itself, bit for bit
    assert torch.equal(first, FMN(norm="l1", steps=10, eot_samples=2)(trained_model, x, y))


@pytest.mark.parametrize("samples", [1, 3])
def test_eot_draws_per_step(samples, trained_model, test_batch) -> None:
    """One forward per draw at each step, plus the first check and the final re-check."""
    x, y = correct(trained_model, *test_batch, n=8)
    model = Counting(trained_model)
    FMN(norm="l2", steps=5, eot_samples=samples)(model, x, y)
    assert model.calls == samples * (5 + 2)


def test_targeted_reaches_the_target(trained_model, test_batch) -> None:
    x, y = correct(trained_model, *test_batch, n=48)
    target = (y + 1 + torch.arange(len(y)) % 9) % 10
    adv = FMN(norm="l2", steps=30)(trained_model, x, y, target=target)
    changed = check_contract(trained_model, x, y, adv, (0.0, 1.0), target=target)
    assert changed.float().mean() > 0.9


def test_warm_start_never_loses_what_the_init_attack_found(trained_model, test_batch) -> None:
    """From DDN's points moved back to the boundary, even two FMN steps keep every success, each no
    farther than DDN's point."""
    x, y = correct(trained_model, *test_batch, n=48)
    init = DDN(steps=15)
    ddn = init(trained_model, x, y)
    cold = FMN(norm="l2", steps=2)(trained_model, x, y)
    warm = FMN(norm="l2", steps=2, init_attack=init)(trained_model, x, y)
    check_contract(trained_model, x, y, warm, (0.0, 1.0))
    ddn_ok = (ddn != x).flatten(1).any(dim=1)
    warm_ok = (warm != x).flatten(1).any(dim=1)
    assert (warm_ok | ~ddn_ok).all()
    assert (norm_of(warm - x, "l2")[ddn_ok] <= norm_of(ddn - x, "l2")[ddn_ok] + 1e-5).all()
    assert int(warm_ok.sum()) > int((cold != x).flatten(1).any(dim=1).sum())


@pytest.mark.parametrize("norm", NORMS)
def test_at_least_as_good_as_foolbox(norm, trained_model, digits) -> None:
    """100 correctly classified test digits, 20 steps each."""
    fb = pytest.importorskip("foolbox")
    x, y = correct(trained_model, digits[2], digits[3], n=100)
    ours = FMN(norm=norm, steps=20)(trained_model, x, y)
    foolbox_cross_check(trained_model, x, y, ours, getattr(fb.attacks, FOOLBOX[norm])(steps=20), norm)


@pytest.mark.slow
@pytest.mark.parametrize("norm", NORMS)
def test_at_least_as_good_as_foolbox_full(norm, trained_model, digits) -> None:
    """Every correctly classified test digit, 100 steps (the default)."""
    fb = pytest.importorskip("foolbox")
    x, y = correct(trained_model, digits[2], digits[3], n=len(digits[3]))
    ours = FMN(norm=norm)(trained_model, x, y)
    foolbox_cross_check(trained_model, x, y, ours, getattr(fb.attacks, FOOLBOX[norm])(steps=100), norm)
