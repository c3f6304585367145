"""Bit-depth reduction (defenses/squeeze.py): at most 2**bits values, bounds, settings."""

from __future__ import annotations

import pytest
import torch

from robustness.defenses import BitDepth
from robustness.errors import InputError


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-2.0, 3.0)])
def test_at_most_two_to_the_bits_levels_within_bounds(bits, bounds) -> None:
    low, high = bounds
    x = low + torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(bits)) * (high - low)
    out = BitDepth(bits=bits, bounds=bounds)(x)
    assert out.shape == x.shape
    assert out.min() >= low and out.max() <= high
    values = out.unique()
    assert len(values) <= 2**bits
    assert len(values) == 2**bits  # 3072 uniform draws hit every level
    step = (high - low) / (2**bits - 1)
    assert (out - x).abs().max() <= step / 2 + 1e-5  # rounds to the nearest level


def test_quantized_inputs_are_fixed_points_and_one_bit_binarizes() -> None:
    levels = torch.arange(16).float().view(1, 1, 4, 4) / 15
    assert torch.allclose(BitDepth(bits=4)(levels), levels)
    x = torch.tensor([0.1, 0.49, 0.51, 0.9]).view(1, 1, 2, 2)
    assert BitDepth(bits=1)(x).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("bits", [0, 9, 2.0, None])
def test_bits_must_be_1_to_8(bits) -> None:
    with pytest.raises(InputError, match="1..8"):
        BitDepth(bits=bits)  # type: ignore[arg-type]


def test_bounds_are_validated() -> None:
    with pytest.raises(InputError, match="low < high"):
        BitDepth(bounds=(1.0, 0.0))
