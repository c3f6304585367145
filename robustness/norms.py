"""Perturbation norms, projections onto norm balls, and clipping to input bounds.

All functions work per sample on batches of shape ``(N, ...)``; ``eps`` is a
float or a tensor of shape ``(N,)``. Norms: ``"linf"``, ``"l2"`` and ``"l1"``.

The L1 projection is the Euclidean projection onto the L1 ball (Duchi, Shalev-Shwartz, Singer
and Chandra 2008, "Efficient projections onto the l1-ball for learning in high dimensions"),
by sorting: ``O(D log D)`` per sample. :func:`project_l1_box` is the exact Euclidean projection
onto the L1 ball intersected with the input box (Croce and Hein 2021, "Mind the box: l1-APGD for
sparse adversarial attacks on image classifiers", Sec. 3), also by sorting, ``O(D log D)``.
"""

from __future__ import annotations

import math
from typing import Literal, Union

import torch
from torch import Tensor

from robustness.errors import InputError

__all__ = ["Norm", "NORMS", "check_norm", "norm_of", "project", "clip_to_bounds", "check_bounds",
           "project_l1_ball", "project_l1_box", "box_diameter"]

Norm = Literal["linf", "l2", "l1"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1")

Eps = Union[float, Tensor]


def check_norm(norm: str) -> Norm:
    """Return ``norm`` normalised to lower case, or raise :class:`InputError`."""
    if not isinstance(norm, str) or norm.lower() not in NORMS:
        raise InputError(f"unknown norm {norm!r}: use one of {', '.join(NORMS)}")
    return norm.lower()  # type: ignore[return-value]


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """Validate an input range ``(low, high)`` with ``low < high``."""
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise InputError(f"bounds must be a pair of numbers (low, high), got {bounds!r}") from None
    if not (low < high) or not all(map(lambda v: v == v and abs(v) != float("inf"), (low, high))):
        raise InputError(f"bounds must be finite with low < high, got {bounds!r}")
    return low, high


def _per_sample(eps: Eps, ref: Tensor) -> Tensor:
    """Broadcast ``eps`` to shape ``(N, 1, ..., 1)`` matching ``ref``."""
    shape = (-1,) + (1,) * (ref.dim() - 1)
    if isinstance(eps, Tensor):
        return eps.to(device=ref.device, dtype=ref.dtype).reshape(shape)
    return torch.full((ref.shape[0],), float(eps), device=ref.device, dtype=ref.dtype).reshape(shape)


def norm_of(delta: Tensor, norm: Norm) -> Tensor:
    """Per-sample norm of ``delta`` (shape ``(N, ...)``), returned as shape ``(N,)``."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l1":
        return flat.abs().sum(dim=1)
    return flat.norm(p=2, dim=1)


def project(x_adv: Tensor, x: Tensor, eps: Eps, norm: Norm) -> Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``."""
    delta = x_adv - x
    e = _per_sample(eps, x)
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, e), -e)
    elif norm == "l1":
        delta = project_l1_ball(delta, e.flatten())
    else:
        n = norm_of(delta, "l2").reshape(e.shape)
        factor = torch.where(n > e, e / n.clamp_min(1e-12), torch.ones_like(n))
        delta = delta * factor
    return x + delta


def project_l1_ball(delta: Tensor, eps: Tensor) -> Tensor:
    """Euclidean projection of each sample of ``delta`` (``(N, ...)``) onto the L1 ball of radius
    ``eps`` (``(N,)``) around 0; samples already inside are returned unchanged.

    Soft thresholding ``sign(d) * max(|d| - theta, 0)`` with the ``theta`` that makes the L1 norm
    ``eps``, found from the sorted magnitudes (Duchi et al. 2008).
    """
    flat = delta.flatten(1)
    n, dim = flat.shape
    if dim == 0 or n == 0:
        return delta
    magnitude = flat.abs()
    e = eps.to(device=flat.device, dtype=flat.dtype).reshape(n, 1)
    inside = magnitude.sum(dim=1, keepdim=True) <= e
    mu = magnitude.sort(dim=1, descending=True).values
    cumsum = mu.cumsum(dim=1)
    k = torch.arange(1, dim + 1, device=flat.device, dtype=flat.dtype)
    # rho: the number of magnitudes above the threshold (the condition holds on a prefix)
    rho = (mu - (cumsum - e) / k > 0).sum(dim=1, keepdim=True).clamp_min(1)
    theta = ((cumsum.gather(1, rho - 1) - e) / rho.to(flat.dtype)).clamp_min(0)
    projected = flat.sign() * (magnitude - theta).clamp_min(0)
    return torch.where(inside, flat, projected).view_as(delta)


def project_l1_box(x: Tensor, delta: Tensor, eps: Eps, bounds: tuple[float, float]) -> Tensor:
    """The perturbation closest to ``delta`` (in L2) with ``||d||_1 <= eps`` and ``x + d`` inside
    ``bounds``: the exact Euclidean projection onto the L1 ball intersected with the box (Croce and
    Hein 2021, "Mind the box", Sec. 3). Returns ``d``, of ``delta``'s shape.

    Clipping to the box after an L1-ball projection (or the other way round) is feasible but not
    this projection: it wastes budget on coordinates the box stops. Here every coordinate gets
    ``d_i = sign(delta_i) * clip(|delta_i| - theta, 0, u_i)``, where ``u_i`` is how far ``x_i`` can
    move towards ``sign(delta_i)`` inside the box, and ``theta >= 0`` is the smallest threshold that
    brings the L1 norm within ``eps`` (``theta = 0`` when clipping ``delta`` to the box is enough).
    The L1 norm as a function of ``theta`` is piecewise linear, falling with slope minus the number
    of coordinates with ``|delta_i| - u_i < theta < |delta_i|``; ``theta`` is found exactly from its
    values at the ``2 D`` sorted breakpoints.

    Shapes: ``x`` and ``delta`` ``(N, ...)`` (``x`` inside ``bounds``), ``eps`` a float or ``(N,)``.

    Example::

        d = project_l1_box(x, x_adv - x, eps=12.0, bounds=(0.0, 1.0))
        x_adv = x + d  # ||d||_1 <= 12 and 0 <= x_adv <= 1
    """
    flat = delta.flatten(1)
    n, dim = flat.shape
    if dim == 0 or n == 0:
        return delta
    x_flat = x.flatten(1).to(flat.dtype)
    e = _per_sample(eps, flat).reshape(n)
    magnitude = flat.abs()
    # room to move in the direction of delta's sign (>= 0 for x inside the box)
    room = torch.where(flat >= 0, bounds[1] - x_flat, x_flat - bounds[0]).clamp_min(0)
    clipped = torch.minimum(magnitude, room)  # the box alone (theta = 0)
    # breakpoints of f(theta) = sum_i clip(|delta_i| - theta, 0, u_i) for theta > 0: a coordinate starts
    # to shrink at |delta_i| - u_i (slope -1) and reaches 0 at |delta_i| (slope +1 again)
    points = torch.cat([(magnitude - room).clamp_min(0), magnitude], dim=1)
    change = torch.cat([-torch.ones_like(flat), torch.ones_like(flat)], dim=1)
    points, order = points.sort(dim=1)
    slope = change.gather(1, order).cumsum(dim=1)  # the slope of f just after each breakpoint
    gaps = points.diff(dim=1, prepend=points.new_zeros(n, 1))
    slope_before = torch.cat([slope.new_zeros(n, 1), slope[:, :-1]], dim=1)
    # f at each breakpoint; the running sums in float64, else float32 overshoots eps by 1e-5 in 3072 dims
    wide = torch.float64 if flat.dtype in (torch.float32, torch.float16, torch.bfloat16) else flat.dtype
    total = clipped.sum(dim=1, keepdim=True, dtype=wide)
    values = total + (slope_before * gaps).to(wide).cumsum(dim=1)
    target = e[:, None].to(wide)
    # the last breakpoint where f >= eps (f falls to 0 at the last one); theta lies before the next
    last = ((values >= target).sum(dim=1, keepdim=True) - 1).clamp_min(0)
    over = (values.gather(1, last) - target).clamp_min(0)
    steepness = (-slope.gather(1, last)).clamp_min(1).to(wide)
    theta = points.gather(1, last).to(wide) + over / steepness
    theta = torch.where(total <= target, torch.zeros_like(theta), theta).to(flat.dtype)
    projected = flat.sign() * torch.minimum((magnitude - theta).clamp_min(0), room)
    # eps = 0 exactly: rounding in the running sums must not leave a trace
    return torch.where(e[:, None] > 0, projected, torch.zeros_like(projected)).view_as(delta)


def box_diameter(norm: Norm, width: float, numel: int) -> float:
    """The ``norm`` distance between opposite corners of a box of side ``width`` in ``numel``
    dimensions: a budget this large lets any input become any other (``width``, ``width * sqrt(D)``,
    ``width * D`` for Linf, L2, L1)."""
    if norm == "linf":
        return float(width)
    if norm == "l1":
        return float(width) * numel
    return float(width) * math.sqrt(numel)


def clip_to_bounds(x: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Clip ``x`` elementwise to ``[low, high]``."""
    return x.clamp(bounds[0], bounds[1])
