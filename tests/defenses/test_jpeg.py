"""JPEG compression (defenses/jpeg.py): real compression, shapes, bounds, devices, settings."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from robustness.defenses import JPEG
from robustness.errors import InputError


def _smooth_rgb(n: int = 4, size: int = 16) -> torch.Tensor:
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def test_jpeg_changes_pixels_and_is_nearly_idempotent(digits) -> None:
    x = digits[2][:64]
    jpeg = JPEG(quality=75)
    once = jpeg(x)
    twice = jpeg(once)
    assert once.shape == x.shape and once.dtype == x.dtype
    first = (once - x).abs().mean()
    assert first > 0.005  # it really compresses
    assert (twice - once).abs().mean() < 0.5 * first  # a second pass changes much less
    assert torch.allclose(once * 255, (once * 255).round(), atol=1e-3)  # 8-bit pixels


def test_lower_quality_distorts_more(digits) -> None:
    x = digits[2][:32]
    err = [(JPEG(quality=q)(x) - x).abs().mean().item() for q in (10, 50, 95)]
    assert err[0] > err[1] > err[2] > 0


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_rgb_and_gray_stay_in_bounds(bounds) -> None:
    low, high = bounds
    for x in (_smooth_rgb(), _smooth_rgb()[:, :1]):
        scaled = low + x * (high - low)
        out = JPEG(quality=30, bounds=bounds)(scaled)
        assert out.shape == scaled.shape
        assert out.min() >= low and out.max() <= high
        assert (out - scaled).abs().mean() < 0.1 * (high - low)  # the same picture, compressed


def test_empty_batch_and_float64() -> None:
    jpeg = JPEG()
    assert jpeg(torch.zeros(0, 3, 8, 8)).shape == (0, 3, 8, 8)
    x = _smooth_rgb(2).double()
    assert jpeg(x).dtype == torch.float64


@pytest.mark.parametrize("quality", [0, 101, 7.5, True, "75"])
def test_quality_must_be_1_to_100(quality) -> None:
    with pytest.raises(InputError, match="1..100"):
        JPEG(quality=quality)  # type: ignore[arg-type]


def test_only_one_or_three_channels() -> None:
    with pytest.raises(InputError, match="2 channels"):
        JPEG()(torch.rand(1, 2, 8, 8))


@pytest.mark.gpu
def test_jpeg_comes_back_on_the_inputs_device() -> None:
    x = _smooth_rgb(2).cuda().requires_grad_(True)
    out = JPEG()(x)
    assert out.device == x.device
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))  # BPDA identity
