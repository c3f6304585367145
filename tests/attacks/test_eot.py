"""Expectation over Transformation: attacks/eot.py, and the eot_samples setting of every gradient attack."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustness.attacks import APGD, APGDT, FGSM, PGD, CarliniWagnerL2
from robustness.attacks.eot import check_eot_samples, eot_gradient
from robustness.errors import InputError
from robustness.norms import norm_of


class Noisy(nn.Module):
    """``model`` behind Gaussian input noise drawn from its own generator (reseed it to replay the draws)."""

    def __init__(self, model: nn.Module, std: float, seed: int = 0) -> None:
        super().__init__()
        self.model, self.std = model, std
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + self.std * torch.randn(x.shape, generator=self.gen, dtype=x.dtype))


class Dropped(nn.Module):
    """A linear model whose input pixels are dropped at random (dropout-like randomness at test time)."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(features, classes, generator=torch.Generator().manual_seed(1)))
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: Tensor) -> Tensor:
        keep = (torch.rand(x.shape, generator=self.gen) > 0.5).to(x.dtype)
        return (x * keep).flatten(1) @ self.w


def _ce(y: Tensor):
    return lambda logits: F.cross_entropy(logits, y, reduction="none")


def _wrong(y: Tensor):
    return lambda logits: logits.argmax(1) != y


def test_eot_gradient_is_the_mean_of_the_draws_and_fooled_means_every_draw() -> None:
    model, x, y = Dropped(12, 3), torch.rand(16, 12, generator=torch.Generator().manual_seed(2)), torch.arange(16) % 3
    draws = eot_gradient(model, x, _ce(y), _wrong(y), samples=5)
    model.gen.manual_seed(0)  # replay the same five draws one by one
    grads, losses, fooled, logits = [], [], [], []
    for _ in range(5):
        one = eot_gradient(model, x, _ce(y), _wrong(y), samples=1)
        grads.append(one.grad), losses.append(one.loss), fooled.append(one.fooled), logits.append(one.logits)
    torch.testing.assert_close(draws.grad, torch.stack(grads).mean(0))
    torch.testing.assert_close(draws.loss, torch.stack(losses).mean(0))
    torch.testing.assert_close(draws.logits, torch.stack(logits).mean(0))
    assert torch.equal(draws.fooled, torch.stack(fooled).all(0))
    assert bool(torch.stack(fooled).any(0).sum() > draws.fooled.sum()), "the test needs a sample fooled by some draws"
    assert eot_gradient(model, x, _ce(y), _wrong(y), samples=3, with_grad=False).grad is None


def test_one_draw_is_a_plain_forward_and_backward(trained_model, test_batch) -> None:
    x, y = test_batch[0][:16], test_batch[1][:16]
    draws = eot_gradient(trained_model, x, _ce(y), _wrong(y), samples=1)
    x_in = x.clone().requires_grad_(True)
    logits = trained_model(x_in)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="none").sum(), x_in)
    assert torch.equal(draws.grad, grad) and torch.equal(draws.logits, logits.detach())
    assert torch.equal(draws.fooled, logits.argmax(1) != y)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_bad_eot_samples_raise_for_every_gradient_attack(bad) -> None:
    with pytest.raises(InputError, match="eot_samples must be an integer >= 1"):
        check_eot_samples("x", bad)
    for cls in (FGSM, PGD, APGD, APGDT, CarliniWagnerL2):
        with pytest.raises(InputError, match=f"{cls.__name__} eot_samples"):
            cls(eot_samples=bad)


def _expected_fooling(model: Noisy, x_adv: Tensor, y: Tensor, draws: int = 30) -> float:
    """The mean over fresh noise draws of the fraction of samples misclassified."""
    model.gen.manual_seed(12345)
    with torch.no_grad():
        return sum(float((model(x_adv).argmax(1) != y).float().mean()) for _ in range(draws)) / draws


@pytest.mark.parametrize("attack", [PGD(steps=5), APGD(steps=5), FGSM()], ids=["pgd", "apgd", "fgsm"])
def test_more_draws_make_the_attack_stronger_on_a_randomized_model(trained_model, test_batch, attack) -> None:
    x, y = test_batch[0][:64], test_batch[1][:64]
    noisy = Noisy(trained_model, std=0.4)
    rates = {}
    for k in (1, 8):
        total = 0.0
        for seed in (0, 1):
            noisy.gen.manual_seed(seed)
            eot = type(attack)(**{**attack.__dict__, "eot_samples": k})
            adv = eot(noisy, x, y, eps=0.15, generator=torch.Generator().manual_seed(seed))
            assert float(norm_of(adv - x, "linf").max()) <= 0.15 + 1e-6 and 0 <= float(adv.min()) <= float(adv.max()) <= 1
            total += _expected_fooling(noisy, adv, y)
        rates[k] = total / 2
    assert rates[8] >= rates[1], rates


def test_eot_attacks_are_reproducible_when_the_model_draws_are(trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    noisy = Noisy(trained_model, std=0.3)
    outs = []
    for _ in range(2):
        noisy.gen.manual_seed(7)  # the runner reseeds random modules the same way (reseed_random_modules)
        outs.append(APGD(steps=5, eot_samples=3)(noisy, x, y, eps=0.1, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(outs[0], outs[1])


def test_carlini_wagner_with_eot_returns_inputs_adversarial_on_every_draw(trained_model, test_batch) -> None:
    x, y = test_batch[0][:24], test_batch[1][:24]
    noisy = Noisy(trained_model, std=0.05)
    cw = CarliniWagnerL2(binary_search_steps=3, steps=20, eot_samples=4)
    noisy.gen.manual_seed(0)
    adv = cw(noisy, x, y)
    changed = (adv - x).flatten(1).abs().amax(1) > 0
    assert bool(changed.any()), "the test needs some adversarial inputs"
    noisy.gen.manual_seed(99)
    with torch.no_grad():
        wrong = torch.stack([noisy(adv).argmax(1) != y for _ in range(20)]).float().mean(0)
    assert float(wrong[changed].mean()) > 0.5  # found against 4 draws, adversarial for most fresh ones too
