"""Gaussian noise (defenses/noise.py): a new draw per call, reproducible under a seed or a
generator, clipped to the bounds, and usable as training-time augmentation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from defenses import GaussianNoise, defend
from robustness.errors import InputError


def _x() -> torch.Tensor:
    return torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_each_draw_differs_but_a_seed_reproduces_the_sequence() -> None:
    x = _x()
    a, b = GaussianNoise(std=0.1, seed=5), GaussianNoise(std=0.1, seed=5)
    first, second = a(x), a(x)
    assert not torch.equal(first, second)
    assert torch.equal(b(x), first) and torch.equal(b(x), second)
    assert not torch.equal(GaussianNoise(std=0.1, seed=6)(x), first)
    a.reseed()
    assert torch.equal(a(x), first)
    a.reseed(6)
    assert torch.equal(a(x), GaussianNoise(std=0.1, seed=6)(x))
    assert GaussianNoise().seed == 0  # seeded with 0 by default: reproducible, like the attacks


def test_a_callers_generator_is_used_and_left_in_their_hands() -> None:
    x = _x()
    gen = torch.Generator().manual_seed(3)
    noise = GaussianNoise(std=0.2, generator=gen)
    first = noise(x)
    expected = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert torch.equal(first, expected)
    noise.reseed(3)
    assert torch.equal(noise(x), first)
    with pytest.raises(InputError, match="needs a seed"):
        noise.reseed()


def test_noise_has_the_right_scale_and_is_clipped() -> None:
    x = torch.full((64, 1, 16, 16), 0.5)
    out = GaussianNoise(std=0.1, seed=0)(x)
    assert 0.09 < (out - x).std() < 0.11
    wide = GaussianNoise(std=2.0, bounds=(-1.0, 1.0), seed=0)(torch.zeros(4, 1, 8, 8))
    assert wide.min() == -1.0 and wide.max() == 1.0
    assert torch.equal(GaussianNoise(std=0.0)(x), x)


def test_training_mode_adds_noise_to_each_batch_from_the_same_generator() -> None:
    x = _x()
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    defended = defend(net, GaussianNoise(std=0.1, eot_samples=8, seed=1)).train()
    reference = GaussianNoise(std=0.1, seed=1)
    for _ in range(3):  # one draw per batch, continuing one sequence; gradients reach the parameters
        out = defended(x)
        with torch.no_grad():
            assert torch.allclose(out, net(reference(x)))
        out.sum().backward()
    assert net[1].weight.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"std": -0.1}, "std"),
        ({"std": float("nan")}, "std"),
        ({"eot_samples": 0}, "eot_samples"),
        ({"eot_samples": 2.5}, "eot_samples"),
        ({"seed": 1, "generator": torch.Generator()}, "not both"),
        ({"seed": "0"}, "seed"),
        ({"generator": 0}, "Generator"),
    ],
)
def test_settings_are_validated(kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        GaussianNoise(**kwargs)


@pytest.mark.gpu
def test_draws_on_the_inputs_device_and_reproducibly() -> None:
    x = _x().cuda()
    a, b = GaussianNoise(seed=2), GaussianNoise(seed=2)
    out = a(x)
    assert out.device == x.device
    assert torch.equal(out, b(x))
    cpu_gen = GaussianNoise(generator=torch.Generator().manual_seed(0))(x)  # a CPU generator, a CUDA input
    assert cpu_gen.device == x.device
