from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustness.attacks import FGSM, PGD
from robustness.errors import InputError
from tests.art_utils import art_classifier


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.6)])
def test_at_least_as_strong_as_art_pgd_with_arts_settings(norm, eps, trained_model, digits) -> None:
    """Same steps, step size and start (no random start: random draws would make the two
    differ by chance). For Linf the iterates are the same, and ours checks every iterate
    where ART keeps the last, so ours must break every sample ART breaks. For L2, ART's
    normalisation and projection differ in rounding, so the two walks drift apart: there
    we compare the counts."""
    from art.attacks.evasion import ProjectedGradientDescent

    x, y = digits[2][:256], digits[3][:256]
    steps, step = 10, eps / 4
    art = ProjectedGradientDescent(
        art_classifier(trained_model), norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=step,
        max_iter=steps, num_random_init=0, batch_size=256, verbose=False,
    )
    theirs = torch.from_numpy(art.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()]))
    ours = PGD(norm=norm, steps=steps, rel_stepsize=step / eps, random_start=False)(trained_model, x, y, eps=eps)
    with torch.no_grad():
        ours_fooled = trained_model(ours).argmax(1) != y
        art_fooled = trained_model(theirs).argmax(1) != y
    assert bool(art_fooled.sum() > 0)
    if norm == "linf":
        assert bool((ours_fooled | ~art_fooled).all()), "ART broke samples that our PGD did not"
    assert _acc(trained_model, ours, y) <= _acc(trained_model, theirs, y)


def test_stronger_than_fgsm_per_budget(trained_model, test_batch) -> None:
    x, y = test_batch
    for eps in (0.05, 0.1, 0.15):
        assert _acc(trained_model, PGD(steps=10)(trained_model, x, y, eps=eps), y) <= _acc(
            trained_model, FGSM()(trained_model, x, y, eps=eps), y
        )


def test_restarts_never_hurt(trained_model, test_batch) -> None:
    x, y = test_batch
    one = PGD(steps=5, restarts=1, loss="margin")(trained_model, x, y, eps=0.1)
    five = PGD(steps=5, restarts=5, loss="margin")(trained_model, x, y, eps=0.1)
    assert _acc(trained_model, five, y) <= _acc(trained_model, one, y)


def test_targeted_reaches_target(trained_model, test_batch) -> None:
    x, y = test_batch
    target = (y + 3) % 10
    out = PGD(steps=20, loss="margin")(trained_model, x, y, eps=0.3, target=target)
    assert (trained_model(out).argmax(1) == target).float().mean() > 0.8


def test_early_stop_changes_cost_not_outcome(trained_model, test_batch) -> None:
    """With early stopping a fooled sample keeps its first fooling iterate; without it, the
    best iterate is still a fooling one: the same samples are broken either way."""
    x, y = test_batch
    calls: list[int] = []
    hook = trained_model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    early = PGD(steps=10, random_start=False)(trained_model, x, y, eps=0.2)
    n_early = sum(calls)
    calls.clear()
    full = PGD(steps=10, random_start=False, early_stop=False)(trained_model, x, y, eps=0.2)
    hook.remove()
    fooled_early = trained_model(early).argmax(1) != y
    fooled_full = trained_model(full).argmax(1) != y
    assert torch.equal(fooled_early, fooled_full)
    assert n_early < sum(calls)


def test_gradient_is_taken_for_inputs_only(trained_model, test_batch) -> None:
    x, y = test_batch
    PGD(steps=3)(trained_model, x, y, eps=0.1)
    assert all(p.grad is None for p in trained_model.parameters())


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"restarts": 0}, {"steps": 2.5}, {"rel_stepsize": -1.0}, {"norm": "l0"}, {"l1_quantile": 1.0}, {"loss": "x"}]
)
def test_bad_settings_raise(kwargs) -> None:
    with pytest.raises(InputError):
        PGD(**kwargs)


def test_default_step_follows_madry_rule() -> None:
    assert PGD(steps=10).step_fraction == pytest.approx(0.25)
    assert PGD(steps=10, rel_stepsize=0.1).step_fraction == pytest.approx(0.1)


def test_init_is_the_first_start(trained_model, test_batch) -> None:
    """Started at points FGSM already broke, one PGD step keeps every one of them broken."""
    x, y = test_batch
    start = FGSM()(trained_model, x, y, eps=0.15)
    broken_by_fgsm = trained_model(start).argmax(1) != y
    out = PGD(steps=1, random_start=True)(trained_model, x, y, eps=0.15, init=start)
    assert bool(broken_by_fgsm.any())
    assert bool(((trained_model(out).argmax(1) != y) | ~broken_by_fgsm).all())


def test_init_of_the_wrong_shape_raises(trained_model, test_batch) -> None:
    x, y = test_batch
    with pytest.raises(InputError, match="init"):
        PGD()(trained_model, x, y, eps=0.1, init=x[:3])
