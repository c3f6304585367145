"""Perturbation norms, projections onto norm balls, and clipping to input bounds.

All functions work per sample on batches of shape ``(N, ...)``; ``eps`` is a
float or a tensor of shape ``(N,)``. Norms: ``"linf"``, ``"l2"`` and ``"l1"``.

The L1 projection is the Euclidean projection onto the L1 ball (Duchi, Shalev-Shwartz, Singer
and Chandra 2008, "Efficient projections onto the l1-ball for learning in high dimensions"),
by sorting: ``O(D log D)`` per sample.
"""

from __future__ import annotations

from typing import Literal, Union

import torch
from torch import Tensor

from robustness.errors import InputError

__all__ = ["Norm", "NORMS", "check_norm", "norm_of", "project", "clip_to_bounds", "check_bounds",
           "project_l1_ball"]

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


def clip_to_bounds(x: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Clip ``x`` elementwise to ``[low, high]``."""
    return x.clamp(bounds[0], bounds[1])
