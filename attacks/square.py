"""The Square attack (Andriushchenko, Croce, Flammarion and Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search", arXiv:1912.00049), Linf, L2 and
L1. The L1 variant is the one AutoAttack's L1 protocol runs, introduced with it by Croce and Hein
2021 ("Mind the box: l1-APGD for sparse adversarial attacks on image classifiers", ICML); the
reference code (pyautoattack ``square.py``) cites only the Square paper for all three norms.

A score-based black-box attack: it only reads the model's logits, never its gradients (every
model call runs under :func:`torch.no_grad`), so it also works on models that cannot be
differentiated and is a check against gradient masking.

Random search. Start at the paper's initial point (Linf: vertical stripes of ``+-eps``; L2:
a grid of "pyramid" blocks of random signs, scaled to norm ``eps``) or at the given ``init``,
then repeat: propose a change of a random square window covering a fraction ``p`` of the
pixels, query the model, keep the change if the loss improved. L1 starts from the same grid
as L2, with the L1 blocks below, each tile of unit L1 norm per channel, projected onto the L1
ball and the box (not rescaled to ``eps`` first: the reference's).

* Linf: the window is set to ``+-eps`` around ``x``, with one random sign per channel.
* L2: the window receives a pyramid of random sign per channel plus its previous content,
  rescaled so that it also takes the mass of a second random window, which is zeroed; the
  whole perturbation is then rescaled to norm ``eps``.
* L1: the same move with L1 masses and a steeper block (weights ``1/(k+1)**4``, unit L1 norm);
  per channel the window gets ``c`` times (the budget left over per channel plus the mass taken out
  of both windows), as the reference, and the result is projected onto the L1 ball (radius
  ``eps * (1 - 1e-6)``) intersected with the box (:func:`robustness.norms.project_l1_box`,
  the projection the reference's ``L1_projection`` computes for the box [0, 1]), which thins that
  excess out.

``p`` follows the paper's piecewise-constant schedule, defined for 10,000 queries: ``p_init``
for the first 10 iterations, halved after 50, 200, 500, 1,000, 2,000, 4,000, 6,000 and 8,000.
``resc_schedule=True`` (the default of a plain ``Square()``, as of the reference's own
``SquareAttack`` class) rescales it to the query budget: halved at 0.5%, 2%, 5%, 10%, 20%, 40%, 60%
and 80% of it. ``resc_schedule=False`` keeps the 10,000-query schedule whatever the budget, as
the reference's AutoAttack builds Square (``resc_schedule=False``): with 5,000 queries the run
then ends at ``p_init / 128``. The presets named after AutoAttack's versions use ``False``.
``benchmarks/results/reference_settings.md`` measures both at 5,000 queries on the digits CNNs: a
tie (rescaled: 24 samples broken that the other missed, unscaled: 25). The plain default stays
rescaled: that measurement does not show the unscaled schedule better, and with a small budget
(the 300 queries of the black-box check) the unscaled schedule never shrinks its squares.

Every sample of the batch steps together (each with its own window positions, drawn from the
generator), and a sample that is fooled leaves the batch at once: it costs no more queries.
Per sample it returns the first point that fools the model, else the point of highest loss.

``queries`` is the budget per sample over all restarts, the starting point included: restart
``r`` gets ``queries // restarts`` queries (the first ``queries % restarts`` one more).

Shapes: ``x`` is ``(N, C, H, W)`` images in pixel space (any ``H``, ``W``, including 8x8 digits
and non-square images), ``y`` (and ``target``) ``(N,)``.

Example::

    from robustness.attacks import Square
    square = Square(norm="linf", queries=1000)
    adv = square(model, x, y, eps=8 / 255, generator=torch.Generator().manual_seed(0))
    adv_l1 = Square(norm="l1", resc_schedule=False)(model, x, y, eps=12.0)  # AutoAttack's L1 settings
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robustness.attacks.base import AttackKind, BestPoints, FixedBudgetAttack, RunState
from robustness.attacks.early_stop import Shrinker
from robustness.attacks.losses import Loss, _check_loss, is_adversarial, objective
from robustness.errors import InputError
from robustness.norms import Norm, clip_to_bounds, project_l1_box

__all__ = ["Square", "p_schedule", "pyramid"]

log = logging.getLogger(__name__)

#: the norm a pyramid block is normalised in (and, for "l1", its steeper 1/j**4 weights)
BlockNorm = Literal["l2", "l1"]
#: an L2 or L1 move's windows: the first square's mask, both squares' union, the pyramid on the
#: first square and a sign per channel (:meth:`Square._windows`)
_Windows = tuple[Tensor, Tensor, Tensor, Tensor]

# the paper's schedule: (last iteration of a 10,000-query run, divisor of p_init) ...
_SCHEDULE: tuple[tuple[int, int], ...] = (
    (10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256),
)
_LAST_DIVISOR = 512  # ... and the rest of the run


def p_schedule(p_init: float, iteration: int, budget: int, *, rescale: bool = True) -> float:
    """The fraction of pixels changed at ``iteration`` (from 0) of a run of ``budget`` queries: the
    10,000-query schedule, rescaled to ``budget`` unless ``rescale=False``."""
    it = int(iteration / budget * 10000) if rescale else iteration
    for last, divisor in _SCHEDULE:
        if it <= last:
            return p_init / divisor
    return p_init / _LAST_DIVISOR


def _unit_block(block: Tensor, norm: BlockNorm) -> Tensor:
    scale = block.norm() if norm == "l2" else block.abs().sum()
    return block / scale.clamp_min(1e-12)


def _centred(rows: int, cols: int, device: torch.device, dtype: torch.dtype, norm: BlockNorm = "l2") -> Tensor:
    """``(rows, cols)``: at Chebyshev distance ``d`` from the centre, ``sum_{j=d+1}^{K} 1 / j**q``
    with ``K`` one more than the half-size (concentric rectangles of weight ``1/(k+1)**q``): ``q = 2``
    and unit L2 norm for ``norm="l2"``, ``q = 4`` and unit L1 norm for ``norm="l1"`` (the reference's)."""
    r = (torch.arange(rows, device=device) - rows // 2).abs()
    c = (torch.arange(cols, device=device) - cols // 2).abs()
    d = torch.maximum(r[:, None], c[None, :])
    k = max(rows // 2, cols // 2) + 1
    weights = 1.0 / torch.arange(1, k + 1, device=device, dtype=dtype) ** (2 if norm == "l2" else 4)
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{j=d+1}^{K} 1/j^q
    return _unit_block(tail[d], norm)


def pyramid(
    size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *, norm: BlockNorm = "l2"
) -> Tensor:
    """The paper's block ``(size, size)``: a positive pyramid on the top half, a negative one on the
    bottom half, unit norm in ``norm`` (``"l2"``, the paper's; ``"l1"``, steeper, of the L1 variant)."""
    device = torch.device(device)
    top = size // 2
    halves = [_centred(top, size, device, dtype, norm), -_centred(size - top, size, device, dtype, norm)]
    return _unit_block(torch.cat(halves, dim=0), norm)


def _window(start: Tensor, size: int, length: int) -> Tensor:
    """``(N, length)`` bool: positions ``start[n] <= i < start[n] + size``."""
    i = torch.arange(length, device=start.device)
    return (i[None, :] >= start[:, None]) & (i[None, :] < start[:, None] + size)


def _mask(rows: Tensor, cols: Tensor, size: int, h: int, w: int) -> Tensor:
    """``(N, 1, h, w)`` bool: the ``size x size`` square at ``(rows[n], cols[n])``."""
    return (_window(rows, size, h)[:, :, None] & _window(cols, size, w)[:, None, :]).unsqueeze(1)


def _signs(shape: tuple[int, ...], like: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1


def _positions(n: int, size: int, length: int, device: torch.device, generator: torch.Generator) -> Tensor:
    """Uniform over every valid start of a window of ``size`` in ``length`` (both ends included)."""
    return torch.randint(0, length - size + 1, (n,), generator=generator, device=device)


@dataclass(eq=False, kw_only=True)
class _SquareRun(RunState):
    """One Square run's working batch: the samples still searched, one row each."""

    x0: Tensor
    y: Tensor
    target: Tensor | None
    cur: Tensor  # the search's current point, its loss and whether it fools the model
    cur_obj: Tensor
    cur_fooled: Tensor

    def write_back(self) -> None:
        """The current point is the search's best (it only moves to a point of higher loss, and
        stays once fooled): record it, then write back."""
        self.record(self.cur, self.cur_obj, self.cur_fooled)
        super().write_back()


@dataclass(frozen=True, kw_only=True)
class Square(FixedBudgetAttack):
    """Square attack: score-based random search over square windows, Linf, L2 or L1.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (the L1 variant of Croce and Hein 2021).
        queries: model evaluations per sample over all restarts, the starting point included.
        p_init: fraction of the pixels the first windows cover (the paper: 0.05 to 0.8); the
            schedule divides it down to ``p_init / 512``.
        restarts: independent runs, each from the paper's initial point (the first from
            ``init`` when given), sharing the budget; samples fooled by a run are not restarted.
        loss: ``"margin"`` (the paper's, for untargeted attacks) or ``"ce"``.
        resc_schedule: rescale the ``p`` schedule to the query budget (``True``) or keep the
            schedule of 10,000 queries (``False``, as the reference's AutoAttack runs Square).
    """

    name: ClassVar[str] = "square"
    kind: ClassVar[AttackKind] = "black-box"  # reads the model's outputs only
    uses_init: ClassVar[bool] = True
    needs_images: ClassVar[bool] = True  # (N, C, H, W) inputs only
    norm: Norm = "linf"
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: Loss = "margin"
    resc_schedule: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_loss(self.loss)
        if not isinstance(self.resc_schedule, bool):
            raise InputError(f"Square resc_schedule must be True or False, got {self.resc_schedule!r}")
        for field in ("queries", "restarts"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"Square {field} must be an integer >= 1, got {value!r}")
        if self.queries < self.restarts:
            raise InputError(
                f"Square needs at least one query per restart: queries={self.queries} < restarts={self.restarts}; "
                "raise queries or lower restarts"
            )
        p = self.p_init
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0 < p <= 1):
            raise InputError(f"Square p_init must be a fraction in (0, 1], got {p!r}")

    def _validate_call(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, bounds: tuple[float, float]
    ) -> tuple[float, float]:
        bounds = super()._validate_call(model, x, y, target, bounds)
        if x.dim() != 4:
            raise InputError(
                f"Square needs (N, C, H, W) images, got x of shape {tuple(x.shape)}: "
                "reshape image inputs to (N, C, H, W), or use a gradient attack (pgd, fgsm) for other data"
            )
        return bounds

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float,
        bounds: tuple[float, float],
        target: Tensor | None,
        generator: torch.Generator,
        init: Tensor | None = None,
    ) -> Tensor:
        best = BestPoints(x)
        share, extra = divmod(self.queries, self.restarts)
        for restart, idx in best.runs(self.restarts):
            x0, y0 = x[idx], y[idx]
            t0 = target[idx] if target is not None else None
            cur = init[idx] if restart == 0 and init is not None else self._initial(x0, eps, bounds, generator)
            cur_obj, cur_fooled = self._query(model, cur, y0, t0)  # the start is accepted whatever its loss
            run = _SquareRun.start(best, idx, x0=x0, y=y0, target=t0, cur=cur, cur_obj=cur_obj, cur_fooled=cur_fooled)
            self._search(model, run, eps=eps, bounds=bounds, generator=generator,
                         budget=share + (1 if restart < extra else 0))
        if log.isEnabledFor(logging.DEBUG):  # the count costs a host sync: only when asked for
            fooled = int((best.score == math.inf).sum())
            log.debug("square %s eps=%g: %d of %d samples fooled", self.norm, eps, fooled, x.shape[0])
        return best.x

    # ------------------------------------------------------------------ one run

    def _search(
        self, model: nn.Module, run: _SquareRun, *, eps: float, bounds: tuple[float, float],
        generator: torch.Generator, budget: int,
    ) -> None:
        """One run of ``budget`` queries (the start, queried already, counts as the first) on ``run``'s samples."""
        view = (-1, 1, 1, 1)
        blocks: dict[int, Tensor] = {}  # this run's pyramid blocks by side (the side changes ~10 times)
        shrink = Shrinker(run.x0.device)
        for it in range(budget):
            if it > 0:
                p = p_schedule(self.p_init, it - 1, budget, rescale=self.resc_schedule)
                if self.norm == "linf":
                    cand = self._linf_candidate(run.x0, run.cur, eps, p, bounds, generator)
                else:  # L2 and L1 move mass between two windows the same way, each in its norm
                    move = self._l2_candidate if self.norm == "l2" else self._l1_candidate
                    cand = move(run.x0, run.cur - run.x0, eps, bounds, self._windows(run.x0, p, generator, blocks))
                obj, fooled = self._query(model, cand, run.y, run.target)
                # a fooling candidate is kept whatever its loss; a fooled sample stays where it was fooled
                accept = ((obj > run.cur_obj) | fooled) & ~run.cur_fooled
                run.cur = torch.where(accept.view(view), cand, run.cur)
                run.cur_obj = torch.where(accept, obj, run.cur_obj)
                run.cur_fooled = run.cur_fooled | (accept & fooled)
            if it == budget - 1:
                break
            if not run.shrink(shrink.update(run.cur_fooled)):
                return
        run.write_back()

    def _query(self, model: nn.Module, x_in: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """Objective and success per sample: one query per sample, without autograd."""
        with torch.no_grad():
            logits = model(x_in)
            return objective(logits, y, self.loss, target).to(x_in.dtype), is_adversarial(logits, y, target)

    # ------------------------------------------------------------------ starting points

    def _initial(self, x: Tensor, eps: float, bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
        n, c, h, w = x.shape
        if self.norm == "linf":  # vertical stripes: one sign per (sample, channel, column)
            return clip_to_bounds(x + eps * _signs((n, c, 1, w), x, generator), bounds)
        # L2 and L1: a centred grid of pyramid tiles of side min(h, w) // 5, a sign per (sample, channel, tile)
        t = max(min(h, w) // 5, 1)
        nh, nw = h // t, w // t
        top, left = (h - nh * t) // 2, (w - nw * t) // 2
        block = pyramid(t, x.device, x.dtype, norm=self.norm)
        blocks = torch.stack([block, block.T])
        flip = torch.randint(0, 2, (n, nh, nw), generator=generator, device=x.device)  # transposed tiles
        signs = _signs((n, c, nh, nw), x, generator)
        tile_r = torch.arange(nh * t, device=x.device) // t
        tile_c = torch.arange(nw * t, device=x.device) // t
        in_r = torch.arange(nh * t, device=x.device) % t
        in_c = torch.arange(nw * t, device=x.device) % t
        pattern = blocks[flip[:, tile_r[:, None], tile_c[None, :]], in_r[:, None], in_c[None, :]]  # (n, nh*t, nw*t)
        delta = x.new_zeros(x.shape)
        delta[:, :, top : top + nh * t, left : left + nw * t] = pattern[:, None] * signs[:, :, tile_r[:, None], tile_c]
        if self.norm == "l1":  # the reference's: every tile of unit L1 norm, projected onto the ball and box
            return _into_l1_ball(x, delta, eps, bounds)
        return clip_to_bounds(x + eps * _unit(delta), bounds)

    # ------------------------------------------------------------------ proposals

    def _linf_candidate(
        self, x: Tensor, cur: Tensor, eps: float, p: float, bounds: tuple[float, float], generator: torch.Generator
    ) -> Tensor:
        """``cur`` with a random square per sample set to ``x +- eps`` (a sign per channel)."""
        n, c, h, w = x.shape
        s = min(max(round(math.sqrt(p * h * w)), 1), h, w)
        mask = _mask(_positions(n, s, h, x.device, generator), _positions(n, s, w, x.device, generator), s, h, w)
        signs = _signs((n, c, 1, 1), x, generator)
        # a proposal that changes nothing wastes a query: where the square already holds these
        # signs, flip a random non-empty subset of the channels (uniform over the other sign
        # vectors, each of which changes every pixel of the square)
        if c <= 20:
            subset = torch.randint(1, 2**c, (n,), generator=generator, device=x.device)
            flips = (subset[:, None] >> torch.arange(c, device=x.device)) & 1
        else:  # 2**c overflows: independent bits (all zero, a wasted query, with probability 2**-c)
            flips = torch.randint(0, 2, (n, c), generator=generator, device=x.device)
        cand = torch.where(mask, clip_to_bounds(x + eps * signs, bounds), cur)
        same = ((cand - cur).abs() <= 1e-7).flatten(1).all(dim=1)
        signs = torch.where(same[:, None, None, None] & flips.bool()[:, :, None, None], -signs, signs)
        return torch.where(mask, clip_to_bounds(x + eps * signs, bounds), cur)

    @staticmethod
    def _l2_candidate(x: Tensor, delta: Tensor, eps: float, bounds: tuple[float, float], windows: _Windows) -> Tensor:
        """Move mass from two random squares into the first one, add a pyramid, rescale to ``eps``."""
        c = x.shape[1]
        m1, union, block, signs = windows
        norm_all = _norm(delta)
        norm_union = _norm(delta * union)
        norm_w1 = (delta.square() * m1).sum(dim=(2, 3), keepdim=True).sqrt()  # per channel
        new = m1 * (block * signs + delta / (norm_w1 + 1e-12))
        # per channel: the budget left over plus the mass taken out of both squares
        size = ((eps**2 - norm_all.square()).clamp_min(0) / c + norm_union.square()).sqrt()
        new = new / (new.square().sum(dim=(2, 3), keepdim=True).sqrt() + 1e-12) * size
        delta = delta * (1 - union) + new
        return clip_to_bounds(x + eps * _unit(delta), bounds)

    @staticmethod
    def _l1_candidate(x: Tensor, delta: Tensor, eps: float, bounds: tuple[float, float], windows: _Windows) -> Tensor:
        """The L1 variant of :meth:`_l2_candidate`: L1 masses, then the projection onto the L1 ball and box."""
        c = x.shape[1]
        m1, union, block, signs = windows
        l1_all = delta.abs().flatten(1).sum(dim=1).view(-1, 1, 1, 1)
        l1_union = (delta.abs() * union).sum(dim=(2, 3), keepdim=True)  # per channel
        l1_w1 = (delta.abs() * m1).sum(dim=(2, 3), keepdim=True)
        new = m1 * (block * signs + delta / (l1_w1 + 1e-12))
        # per channel, as the reference: c times (the budget left over per channel plus the mass taken
        # out of both squares); the projection then brings the whole back within eps
        size = ((eps - l1_all).clamp_min(0) / c + l1_union) * c
        new = new / (new.abs().sum(dim=(2, 3), keepdim=True) + 1e-12) * size
        return _into_l1_ball(x, delta * (1 - union) + new, eps, bounds)

    def _windows(self, x: Tensor, p: float, generator: torch.Generator, blocks: dict[int, Tensor]) -> _Windows:
        """Per sample two random odd squares covering about ``p`` of the pixels: the first one's mask
        ``(N, 1, H, W)``, both squares' union, the pyramid placed on the first (transposed for a random
        half of the samples, zero outside it) and a random sign per channel ``(N, C, 1, 1)``."""
        n, c, h, w = x.shape
        s = max(round(math.sqrt(p * h * w)), 3)
        s = min(s + 1 - s % 2, h, w)  # odd, as in the paper, unless the image is smaller
        dev = x.device
        r1, c1 = _positions(n, s, h, dev, generator), _positions(n, s, w, dev, generator)
        r2, c2 = _positions(n, s, h, dev, generator), _positions(n, s, w, dev, generator)
        m1 = _mask(r1, c1, s, h, w).to(x.dtype)
        union = torch.maximum(m1, _mask(r2, c2, s, h, w).to(x.dtype))
        if s not in blocks:
            block = pyramid(s, dev, x.dtype, norm=self.norm)
            blocks[s] = torch.stack([block, block.T])
        flip = torch.randint(0, 2, (n,), generator=generator, device=dev)
        rel_r = (torch.arange(h, device=dev)[None, :] - r1[:, None]).clamp(0, s - 1)
        rel_c = (torch.arange(w, device=dev)[None, :] - c1[:, None]).clamp(0, s - 1)
        block = m1 * blocks[s][flip[:, None, None], rel_r[:, :, None], rel_c[:, None, :]].unsqueeze(1)
        return m1, union, block, _signs((n, c, 1, 1), x, generator)


def _into_l1_ball(x: Tensor, delta: Tensor, eps: float, bounds: tuple[float, float]) -> Tensor:
    """``x`` plus ``delta`` projected onto the L1 ball of radius just under ``eps`` and the box."""
    return x + project_l1_box(x, delta, eps * (1 - 1e-6), bounds)


def _norm(delta: Tensor) -> Tensor:
    """Per-sample L2 norm, shape ``(N, 1, 1, 1)``."""
    return delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _unit(delta: Tensor) -> Tensor:
    return delta / _norm(delta).clamp_min(1e-12)
