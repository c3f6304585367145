"""Median smoothing (defenses/smoothing.py): removes salt-and-pepper noise, agrees with SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustness.defenses import MedianSmoothing
from robustness.errors import InputError


def test_removes_salt_and_pepper_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    clean = torch.full((4, 3, 16, 16), 0.4)
    noisy = clean.clone()
    mask = torch.rand(clean.shape, generator=gen) < 0.05  # sparse: no 3x3 window holds 5 noisy pixels
    noisy[mask] = (torch.rand(clean.shape, generator=gen)[mask] > 0.5).float()
    assert torch.equal(MedianSmoothing(kernel_size=3)(noisy), clean)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_matches_scipy_median_filter_with_mirror_padding(kernel_size) -> None:
    from scipy.ndimage import median_filter

    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(kernel_size))
    out = MedianSmoothing(kernel_size=kernel_size)(x)
    # torch's "reflect" padding (edge not repeated) is SciPy's "mirror"; per channel: size 1 on N and C
    expected = median_filter(x.numpy(), size=(1, 1, kernel_size, kernel_size), mode="mirror")
    np.testing.assert_allclose(out.numpy(), expected, atol=0)
    assert out.min() >= x.min() and out.max() <= x.max()


@pytest.mark.parametrize("kernel_size", [1, 2, 4, -3, 3.0])
def test_kernel_size_must_be_odd_and_at_least_3(kernel_size) -> None:
    with pytest.raises(InputError, match="kernel_size"):
        MedianSmoothing(kernel_size=kernel_size)  # type: ignore[arg-type]


def test_kernel_larger_than_the_image_is_refused_with_advice() -> None:
    with pytest.raises(InputError, match="smaller kernel_size"):
        MedianSmoothing(kernel_size=9)(torch.rand(1, 1, 4, 4))
