"""The base class and the wrapper: BPDA and naive gradients, EOT averaging, the gradient-mode
context manager, descriptions and validation (defenses/preprocessing.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from robustness.defenses import (
    JPEG,
    BitDepth,
    Defended,
    GaussianNoise,
    MedianSmoothing,
    Preprocessor,
    defend,
    describe_defenses,
    gradient_mode,
)
from robustness.errors import InputError
from tests.counting import Counting


class SquaredBitDepth(BitDepth):
    """BitDepth whose BPDA surrogate is x**2: the backward pass must use its Jacobian, 2x."""

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        return x**2


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad


def _logit_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the sum of true-class logits: linear in the logits, so EOT averages it exactly."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    return grad


# --- BPDA ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pre", [BitDepth(bits=3), JPEG(quality=50)], ids=["bitdepth", "jpeg"])
def test_bpda_backward_is_the_gradient_at_the_preprocessed_point(pre, trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    defended = defend(trained_model, pre)
    grad = _input_grad(defended, x, y)
    expected = _input_grad(trained_model, pre.transform(x), y)
    assert torch.allclose(grad, expected, atol=1e-6, rtol=1e-5)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("pre", [BitDepth(bits=3), JPEG(quality=50)], ids=["bitdepth", "jpeg"])
def test_naive_gradient_through_a_non_differentiable_transform_is_zero(pre, trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    defended = defend(trained_model, pre, gradient_mode="naive")
    assert torch.equal(_input_grad(defended, x, y), torch.zeros_like(x))
    with torch.no_grad():  # the forward pass is the same transform in both modes
        naive = defended(x)
        defended.gradient_mode = "adaptive"
        assert torch.equal(defended(x), naive)


def test_bpda_uses_the_jacobian_of_a_custom_surrogate(trained_model, test_batch) -> None:
    x, y = test_batch[0][:16], test_batch[1][:16]
    pre = SquaredBitDepth(bits=3)
    assert pre.describe()["surrogate"] == "SquaredBitDepth.surrogate"
    grad = _input_grad(defend(trained_model, pre), x, y)
    upstream = _input_grad(trained_model, pre.transform(x), y)
    assert torch.allclose(grad, 2 * x * upstream, atol=1e-6, rtol=1e-5)


def test_median_smoothing_gradient_is_exact_in_both_modes(trained_model, test_batch) -> None:
    x, y = test_batch[0][:16], test_batch[1][:16]
    pre = MedianSmoothing(kernel_size=3)
    adaptive = _input_grad(defend(trained_model, pre), x, y)
    naive = _input_grad(defend(trained_model, pre, gradient_mode="naive"), x, y)
    assert torch.equal(adaptive, naive)
    assert adaptive.abs().sum() > 0
    # exact: a directional finite difference agrees with autograd (float64, inputs without ties,
    # where the median is locally linear)
    model = defend(trained_model.double(), pre)
    gen = torch.Generator().manual_seed(0)
    x64 = torch.rand(x.shape, generator=gen, dtype=torch.float64)
    d = torch.randn(x.shape, generator=gen, dtype=torch.float64) * 1e-7
    grad = _input_grad(model, x64, y)
    with torch.no_grad():
        change = F.cross_entropy(model(x64 + d), y, reduction="sum") - F.cross_entropy(model(x64), y, reduction="sum")
    assert change.item() == pytest.approx((grad * d).sum().item(), rel=1e-4)


# --- EOT -----------------------------------------------------------------------------------

def test_eot_gradient_is_the_average_over_draws(trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    draws = 4
    defended = defend(trained_model, GaussianNoise(std=0.1, eot_samples=draws, seed=7))
    grad = _logit_grad(defended, x, y)
    manual_noise = GaussianNoise(std=0.1, eot_samples=1, seed=7)  # same seed: the same draws, in order
    manual = sum(_logit_grad(nn.Sequential(manual_noise, trained_model), x, y) for _ in range(draws)) / draws
    assert torch.allclose(grad, manual, atol=1e-6, rtol=1e-5)
    one = GaussianNoise(std=0.1, seed=7)
    assert not torch.allclose(grad, _logit_grad(nn.Sequential(one, trained_model), x, y), atol=1e-4)


def test_eot_averages_logits_only_while_an_input_gradient_is_taken(trained_model, test_batch) -> None:
    x = test_batch[0][:8]
    counting = Counting(trained_model)
    defended = defend(counting, GaussianNoise(std=0.1, eot_samples=5, seed=0))
    with torch.no_grad():
        defended(x)
    assert counting.calls == 1  # a prediction is one draw
    defended(x)  # grad mode on but the input needs no gradient (training-time augmentation)
    assert counting.calls == 2
    defended(x.clone().requires_grad_(True))
    assert counting.calls == 7
    with gradient_mode(defended, "naive"):
        defended(x.clone().requires_grad_(True))
    assert counting.calls == 8


def test_eot_logits_are_the_mean_of_the_draws(trained_model, test_batch) -> None:
    x = test_batch[0][:8].clone().requires_grad_(True)
    logits = defend(trained_model, GaussianNoise(std=0.2, eot_samples=3, seed=1))(x)
    manual = GaussianNoise(std=0.2, seed=1)
    with torch.no_grad():
        expected = sum(trained_model(manual(x)) for _ in range(3)) / 3
    assert torch.allclose(logits.detach(), expected, atol=1e-6)


def test_naive_mode_on_a_randomized_defense_is_one_exact_draw(trained_model, test_batch) -> None:
    x, y = test_batch[0][:16], test_batch[1][:16]
    naive = defend(trained_model, GaussianNoise(std=0.1, eot_samples=6, seed=3), gradient_mode="naive")
    one = nn.Sequential(GaussianNoise(std=0.1, seed=3), trained_model)
    assert torch.allclose(_logit_grad(naive, x, y), _logit_grad(one, x, y), atol=1e-6)


def test_chain_of_bpda_and_randomized_preprocessors(trained_model, test_batch) -> None:
    x, y = test_batch[0][:16], test_batch[1][:16]
    defended = defend(trained_model, GaussianNoise(std=0.05, eot_samples=2, seed=0), BitDepth(bits=4))
    assert defended.eot_samples == 2
    grad = _logit_grad(defended, x, y)
    noise, bits = GaussianNoise(std=0.05, seed=0), BitDepth(bits=4)
    # identity backward through BitDepth, exact through the noise clip: the model's gradient at the squeezed point
    manual = torch.zeros_like(x)
    for _ in range(2):
        noisy = noise(x)
        g = _logit_grad(trained_model, bits.transform(noisy), y)
        manual += g * ((noisy > 0) & (noisy < 1)).float()  # clamp passes gradient only inside the bounds
    assert torch.allclose(grad, manual / 2, atol=1e-6)


# --- the wrapper and the context manager ---------------------------------------------------

def test_forward_is_the_composition(trained_model, test_batch) -> None:
    x = test_batch[0][:16]
    p1, p2 = BitDepth(bits=3), MedianSmoothing(kernel_size=3)
    with torch.no_grad():
        assert torch.equal(defend(trained_model, p1, p2)(x), trained_model(p2(p1(x))))
    assert isinstance(defend(trained_model, p1), Defended)


def test_gradient_mode_sets_every_defended_and_restores_them(trained_model) -> None:
    inner = defend(trained_model, BitDepth(bits=3), gradient_mode="naive")
    outer = nn.Sequential(defend(inner, JPEG()), nn.Identity())
    top = outer[0]
    with gradient_mode(outer, "adaptive") as same:
        assert same is outer
        assert inner.gradient_mode == top.gradient_mode == "adaptive"
    assert (inner.gradient_mode, top.gradient_mode) == ("naive", "adaptive")
    with pytest.raises(RuntimeError, match="boom"), gradient_mode(outer, "NAIVE"):
        assert top.gradient_mode == "naive"
        raise RuntimeError("boom")
    assert (inner.gradient_mode, top.gradient_mode) == ("naive", "adaptive")
    with gradient_mode(trained_model, "naive"):  # nothing to switch: fine
        pass


@pytest.mark.parametrize("mode", ["bpda", "", None, 1])
def test_unknown_gradient_modes_are_refused(mode, trained_model) -> None:
    defended = defend(trained_model, BitDepth())
    with pytest.raises(InputError, match="adaptive"), gradient_mode(defended, mode):
        pass
    with pytest.raises(InputError, match="adaptive"):
        defended.gradient_mode = mode
    with pytest.raises(InputError, match="adaptive"):
        defend(trained_model, BitDepth(), gradient_mode=mode)
    assert defended.gradient_mode == "adaptive"


def test_describe_defenses_lists_each_defended_in_its_mode(trained_model) -> None:
    tree = nn.Sequential(
        defend(trained_model, JPEG(quality=60), GaussianNoise(std=0.05, eot_samples=4, seed=2)),
    )
    info = describe_defenses(tree)
    json.dumps(info)  # goes into report.json as is
    assert len(info) == 1 and info[0]["path"] == "0" and info[0]["model"] == "TinyCNN"
    assert info[0]["gradient_mode"] == "adaptive" and info[0]["eot_samples"] == 4
    jpeg, noise = info[0]["preprocessors"]
    assert jpeg["name"] == "JPEG" and jpeg["settings"] == {"quality": 60} and jpeg["gradient"] == "bpda"
    assert jpeg["surrogate"] == "identity" and "BPDA" in jpeg["backward"]
    assert noise["randomized"] and noise["eot_samples"] == 4 and "EOT over 4" in noise["backward"]
    with gradient_mode(tree, "naive"):
        naive = describe_defenses(tree)[0]
    assert naive["gradient_mode"] == "naive" and naive["eot_samples"] == 1
    assert "zero" in naive["preprocessors"][0]["backward"]
    assert describe_defenses(trained_model) == []


def test_defended_validates_its_arguments(trained_model) -> None:
    with pytest.raises(InputError, match="at least one preprocessor"):
        defend(trained_model)
    with pytest.raises(InputError, match="Preprocessor"):
        defend(trained_model, nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="nn.Module"):
        defend(lambda x: x, BitDepth())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="different bounds"):
        defend(trained_model, BitDepth(bounds=(0, 1)), JPEG(bounds=(0, 255)))
    assert defend(trained_model, BitDepth(bounds=(0, 255))).bounds == (0.0, 255.0)


@pytest.mark.parametrize(
    "pre", [JPEG(), BitDepth(), MedianSmoothing(), GaussianNoise()], ids=lambda p: type(p).__name__
)
@pytest.mark.parametrize("bad", [torch.rand(4, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.uint8)], ids=["3d", "uint8"])
def test_preprocessors_refuse_inputs_that_are_not_float_images(pre, bad) -> None:
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        pre(bad)


def test_a_new_preprocessor_needs_only_transform_and_settings() -> None:
    class Invert(Preprocessor):
        def transform(self, x: torch.Tensor) -> torch.Tensor:
            return self.bounds[0] + self.bounds[1] - x

        def settings(self) -> dict[str, Any]:
            return {}

    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = Invert()(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, -torch.ones_like(x))
    assert Invert().describe()["backward"] == "exact (autograd)"
    with pytest.raises(TypeError):
        Preprocessor()  # type: ignore[abstract]
