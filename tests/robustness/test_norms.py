"""The L1 projections of robustness.norms: onto the L1 ball, and onto the L1 ball intersected with
the input box (Croce and Hein 2021, "Mind the box"), checked as properties (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustness.norms import box_diameter, norm_of, project_l1_ball, project_l1_box

TOL = 1e-9


def _case(seed: int, n: int, dim: int, low: float, width: float, scale: float):
    g = torch.Generator().manual_seed(seed)
    x = low + width * torch.rand((n, dim), generator=g, dtype=torch.float64)
    # some coordinates at the bounds, where the box bites first
    at_edge = torch.rand((n, dim), generator=g, dtype=torch.float64)
    x = torch.where(at_edge < 0.15, torch.full_like(x, low), x)
    x = torch.where(at_edge > 0.85, torch.full_like(x, low + width), x)
    delta = scale * width * torch.randn((n, dim), generator=g, dtype=torch.float64)
    delta = torch.where(torch.rand((n, dim), generator=g, dtype=torch.float64) < 0.2, 0 * delta, delta)
    return x, delta


def _bisection(x, delta, eps, bounds, iters: int = 200):
    """The projection by bisection on the threshold theta, one sample at a time (float64)."""
    out = []
    for xi, di, ei in zip(x, delta, eps):
        room = torch.where(di >= 0, bounds[1] - xi, xi - bounds[0]).clamp_min(0)

        def shrunk(theta: float):
            return di.sign() * torch.minimum((di.abs() - theta).clamp_min(0), room)

        if shrunk(0.0).abs().sum() <= ei:
            out.append(shrunk(0.0))
            continue
        lo, hi = 0.0, float(di.abs().max())
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if shrunk(mid).abs().sum() > ei else (lo, mid)
        out.append(shrunk(hi))
    return torch.stack(out)


cases = dict(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 4),
    dim=st.integers(1, 12),
    low=st.floats(-2.0, 1.0),
    width=st.floats(0.1, 3.0),
    scale=st.floats(0.0, 2.0),
    eps_frac=st.floats(0.0, 1.2),
)


@settings(max_examples=150, deadline=None)
@given(**cases)
def test_inside_ball_and_box_and_matches_bisection(seed, n, dim, low, width, scale, eps_frac) -> None:
    x, delta = _case(seed, n, dim, low, width, scale)
    bounds = (low, low + width)
    eps = eps_frac * delta.abs().sum(dim=1)  # from 0 (everything shrinks away) to inactive
    d = project_l1_box(x, delta, eps, bounds)
    assert d.shape == delta.shape
    assert torch.all(norm_of(d, "l1") <= eps + TOL)
    assert torch.all(x + d >= bounds[0] - TOL) and torch.all(x + d <= bounds[1] + TOL)
    assert torch.allclose(d, _bisection(x, delta, eps, bounds), atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(**cases)
def test_optimal_against_every_feasible_point(seed, n, dim, low, width, scale, eps_frac) -> None:
    """The Euclidean projection p of v onto a convex set C satisfies (v - p) . (z - p) <= 0 for every
    z in C; here z are random points of C (vertices of the ball clipped to the box, scaled inside)."""
    x, delta = _case(seed, n, dim, low, width, scale)
    bounds = (low, low + width)
    eps = eps_frac * delta.abs().sum(dim=1) + 1e-3
    d = project_l1_box(x, delta, eps, bounds)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(20):
        z = torch.randn((n, dim), generator=g, dtype=torch.float64)
        z = z / z.abs().sum(dim=1, keepdim=True).clamp_min(1e-12) * eps[:, None]
        z = z * torch.rand((n, 1), generator=g, dtype=torch.float64)
        z = (x + z).clamp(*bounds) - x  # still in the ball: clipping only shrinks |z_i|
        assert torch.all(((delta - d) * (z - d)).sum(dim=1) <= 1e-7)


@settings(max_examples=100, deadline=None)
@given(**cases)
def test_equals_the_ball_projection_when_the_box_is_inactive(seed, n, dim, low, width, scale, eps_frac) -> None:
    x, delta = _case(seed, n, dim, low, width, scale)
    eps = eps_frac * delta.abs().sum(dim=1)
    wide = (low - 10 * width * (1 + scale) * dim, low + 10 * width * (1 + scale) * dim)
    assert torch.allclose(project_l1_box(x, delta, eps, wide), project_l1_ball(delta, eps), atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(**cases)
def test_idempotent(seed, n, dim, low, width, scale, eps_frac) -> None:
    x, delta = _case(seed, n, dim, low, width, scale)
    bounds = (low, low + width)
    eps = eps_frac * delta.abs().sum(dim=1)
    once = project_l1_box(x, delta, eps, bounds)
    assert torch.allclose(project_l1_box(x, once, eps, bounds), once, atol=1e-9)


def test_spends_the_budget_the_box_leaves_unlike_clipping() -> None:
    """Clipping after the ball projection loses budget on a coordinate the box stops; the exact
    projection hands it to the other coordinates."""
    x = torch.tensor([[1.0, 0.5]])
    delta = torch.tensor([[2.0, 1.0]])  # the first coordinate cannot move up at all
    d = project_l1_box(x, delta, 1.0, (0.0, 1.0))
    assert torch.allclose(d, torch.tensor([[0.0, 0.5]]))  # box room 0.5 on the second, budget left
    clipped = (x + project_l1_ball(delta, torch.tensor([1.0]))).clamp(0, 1) - x
    assert clipped[0, 1] < d[0, 1]


def test_float32_images_and_a_tensor_of_budgets() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((5, 3, 4, 4), generator=g)
    delta = torch.randn((5, 3, 4, 4), generator=g)
    eps = torch.tensor([0.0, 0.5, 2.0, 8.0, 1000.0])
    d = project_l1_box(x, delta, eps, (0.0, 1.0))
    assert d.shape == x.shape and d.dtype == torch.float32
    assert torch.all(norm_of(d, "l1") <= eps * (1 + 1e-5) + 1e-5)
    assert torch.all(x + d >= -1e-6) and torch.all(x + d <= 1 + 1e-6)
    assert torch.equal(d[0], torch.zeros_like(d[0]))
    assert torch.allclose(d[4], (x[4] + delta[4]).clamp(0, 1) - x[4])  # budget inactive: the box alone


@pytest.mark.parametrize(("norm", "expected"), [("linf", 2.0), ("l2", 2.0 * math.sqrt(64)), ("l1", 128.0)])
def test_box_diameter(norm, expected) -> None:
    assert box_diameter(norm, 2.0, 64) == pytest.approx(expected)
