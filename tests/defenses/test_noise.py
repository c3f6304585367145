"""Gaussian noise (defenses/noise.py): a new draw per call, reproducible under a seed or a
generator, clipped to the bounds, and usable as training-time augmentation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustness.defenses import GaussianNoise, defend
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


def _noisy_model(seed: int = 0) -> tuple[nn.Module, GaussianNoise]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    noise = GaussianNoise(std=0.3, eot_samples=2, seed=1)
    return defend(net, noise), noise


def test_evaluate_draws_noise_from_its_seed_and_hands_the_generator_back(trained_model, test_batch) -> None:
    """Two evaluations with the same seed agree whatever was drawn before, another seed draws
    other noise, and the defense's own generator comes back in the state it was in."""
    import robustness

    x, y = test_batch[0][:48], test_batch[1][:48]
    noise = GaussianNoise(std=0.3, eot_samples=2, seed=1)
    model = defend(trained_model, noise)
    model(x)  # a draw before: the generator exists and has moved on
    before = noise.rng_state()

    def run(seed: int) -> robustness.Report:
        return robustness.evaluate(model, (x, y), attacks=["pgd(steps=3)"], epsilons=[0.1, 0.2], seed=seed,
                                   progress=False, checks=False)

    first = run(0)
    model(x)  # more draws between the two evaluations
    after_draw = noise.rng_state()
    second = run(0)
    assert torch.equal(noise.rng_state()["generators"]["cpu"], after_draw["generators"]["cpu"])
    assert not torch.equal(after_draw["generators"]["cpu"], before["generators"]["cpu"])
    assert first.robust_accuracy == second.robust_accuracy and first.clean_accuracy == second.clean_accuracy
    assert first.per_sample == second.per_sample  # per example, not only the totals
    others = [run(s) for s in (1, 2, 3)]
    assert any(o.robust_accuracy != first.robust_accuracy or o.clean_accuracy != first.clean_accuracy
               for o in others)  # the noise follows the seed (std 0.3 flips some digits)


def test_noise_state_is_checkpointed_and_a_resumed_run_is_exact(digits, tmp_path) -> None:
    """Training through GaussianNoise (augmentation): 1 epoch + resume to 2 equals 2 straight epochs."""
    from torch.utils.data import DataLoader, TensorDataset

    from robustness.defenses import AdversarialTrainer

    def run(path, epochs: int, resume: bool) -> nn.Module:
        model, _ = _noisy_model()
        loader = DataLoader(TensorDataset(digits[0][:128], digits[1][:128]), batch_size=64, shuffle=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        AdversarialTrainer(method="fgsm-rs", eps=0.1, seed=0, guard=False).fit(
            model, loader, epochs=epochs, optimizer=opt, checkpoint=path, resume=resume, progress=False)
        return model

    straight = run(tmp_path / "a.state", 2, False)
    run(tmp_path / "b.state", 1, False)
    state = torch.load(tmp_path / "b.state", weights_only=True)
    assert len(state["random_modules"]) == 1 and "cpu" in state["random_modules"][0]["generators"]
    resumed = run(tmp_path / "b.state", 2, True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
