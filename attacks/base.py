"""Base classes of every attack: immutable settings, and the invariants enforced once.

An attack is a frozen, keyword-only dataclass validated when it is built. The model,
inputs, labels and budget are call arguments::

    adv = PGD(steps=20)(model, x, y, eps=8 / 255)

Two families:

* :class:`FixedBudgetAttack` (FGSM, PGD): needs ``eps``; its result is projected onto the
  ``eps`` ball and clipped to the bounds here, whatever the subclass returned.
* :class:`MinimizationAttack` (Carlini-Wagner): searches the smallest adversarial
  perturbation. Without ``eps`` it returns, per sample, the smallest adversarial input it
  found (the input itself where it found none); with ``eps`` it returns that input where its
  perturbation is within ``eps`` and the clean input elsewhere.

Every concrete attack declares its ``kind`` (:data:`AttackKind`), a class attribute the sanity
checks (:mod:`robustness.checks`) read to pick what they compare: ``"single-step"`` (FGSM),
``"iterative"`` (PGD, APGD), ``"black-box"`` (Square: reads the model's outputs only) or
``"minimization"`` (Carlini-Wagner). Nothing checks it when the class is defined: the checks
that need it report an attack that lacks it (:func:`kind_of`).

The bookkeeping that iterative attacks share lives here too: :class:`BestPoints` keeps, per
sample, the first point that fools the model or else the point of highest loss over all runs,
and hands out the samples each run attacks; :class:`RunState` is one run's working batch, which
records its candidates, shrinks as samples are fooled and writes back to the :class:`BestPoints`.

What the base class checks and guarantees at every call, before the attack runs:

* ``x`` is a float32 or float64 tensor ``(N, ...)``, finite and inside ``bounds`` (half
  precision is refused: steps and projections in float16/bfloat16 overshoot the budget);
* ``y`` and ``target`` hold class indices of any integer dtype (cast to ``torch.long`` on
  ``x``'s device), none negative, none beyond the logits of the model's first forward;
* ``eps`` is a real number (Python, NumPy or a 0-d tensor), finite and ``>= 0``;
* the attack runs with every submodule in eval mode (BatchNorm statistics are not updated,
  dropout draws nothing) and each submodule's ``training`` flag is restored afterwards;
* a model whose forward blocks gradients (``torch.no_grad``, ``detach``, a call under
  ``torch.inference_mode``) makes a gradient attack raise :class:`robustness.errors.InputError`
  that says so, not autograd's error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, get_args

import torch
from torch import Tensor, nn

from robustness.errors import InputError
from robustness.model import modes_restored
from robustness.norms import Norm, check_bounds, check_norm, clip_to_bounds, norm_of, project

__all__ = [
    "ATTACK_KINDS", "Attack", "AttackKind", "BestPoints", "FixedBudgetAttack", "L1_ATTACKS", "MinimizationAttack",
    "RunState",
    "WorkingBatch", "default_generator", "kind_of",
]

#: the registered attacks that work in the L1 norm: an attack that does not names them in its error
L1_ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "fmn", "square")

#: what an attack is, for the sanity checks: one gradient step; several gradient steps; queries of
#: the model's outputs only; a search for the smallest adversarial perturbation
AttackKind = Literal["single-step", "iterative", "black-box", "minimization"]
ATTACK_KINDS: tuple[AttackKind, ...] = get_args(AttackKind)


def default_generator(device: torch.device, seed: int = 0) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: attacks are reproducible by default."""
    return torch.Generator(device=device).manual_seed(seed)


#: inputs may lie this far outside the bounds (relative to the bounds' scale): rounding, not a mistake
_BOUNDS_TOL = 1e-6
#: autograd's error when the loss does not depend on the input through the graph
_NO_GRAD_ERROR = "does not require grad and does not have a grad_fn"


def _check_eps(eps: object) -> float:
    """``eps`` as a float: a real number (Python, NumPy, a 0-d tensor), finite and ``>= 0``."""
    if isinstance(eps, Tensor):
        if eps.dim() != 0 or eps.dtype == torch.bool or eps.is_complex():
            raise InputError(f"eps must be a number or a 0-d real tensor, got a {eps.dtype} tensor of shape "
                             f"{tuple(eps.shape)}")
        value = float(eps)
    elif isinstance(eps, numbers.Real) and not isinstance(eps, bool):
        value = float(eps)
    else:
        raise InputError(f"eps must be a number, got {eps!r}")
    if not math.isfinite(value) or value < 0:
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    return value


def _check_sample_eps(eps: object, x: Tensor) -> float | Tensor:
    """``eps`` of a minimization attack: a number (:func:`_check_eps`) or a ``(N,)`` real tensor of
    per-sample budgets, finite and ``>= 0`` (returned in ``x``'s dtype, on its device)."""
    if not isinstance(eps, Tensor) or eps.dim() == 0:
        return _check_eps(eps)
    if eps.shape != (x.shape[0],) or not eps.is_floating_point():
        raise InputError(f"eps must be a number or a floating-point tensor of shape ({x.shape[0]},) (one budget "
                         f"per sample), got a {eps.dtype} tensor of shape {tuple(eps.shape)}")
    eps = eps.detach().to(device=x.device, dtype=x.dtype)
    if eps.numel() and not bool(torch.isfinite(eps).all() & (eps >= 0).all()):
        raise InputError("every per-sample eps must be a finite number >= 0")
    return eps


def _check_labels(name: str, labels: object, n: int) -> None:
    """``labels`` is a ``(n,)`` tensor of an integer dtype (bool and floats are refused)."""
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != n:
        got = f"shape {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise InputError(f"{name} must be an integer label tensor of shape ({n},), got {got}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise InputError(f"{name} must hold integer class indices, got dtype {labels.dtype}: pass {name}.long()")


def _check_values(x: Tensor, labels: dict[str, Tensor], bounds: tuple[float, float]) -> dict[str, int]:
    """``x`` is finite and inside ``bounds``, no label is negative; returns each label tensor's
    largest value. One host sync for everything."""
    stats = list(torch.aminmax(x.detach())) if x.numel() else []
    named = [(name, t) for name, t in labels.items() if t.numel()]
    for _, t in named:
        stats += [v.to(device=x.device, dtype=x.dtype) for v in torch.aminmax(t)]
    if not stats:
        return {}
    values = torch.stack(stats).tolist()
    if x.numel():
        lo, hi = values[:2]
        values = values[2:]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError("x contains NaN or inf values: attacks need finite inputs inside the bounds; clean "
                             "the data (e.g. torch.nan_to_num) or drop those samples")
        low, high = bounds
        tol = _BOUNDS_TOL * max(1.0, abs(low), abs(high))
        if lo < low - tol or hi > high + tol:
            raise InputError(
                f"x lies in [{lo:.6g}, {hi:.6g}], outside the bounds {list(bounds)}: pass bounds=(low, high) that "
                f"match x (e.g. bounds=(0, 255) for 0-255 pixels) or rescale x into the bounds; a mean/std "
                f"normalization goes inside the model (robustness.NormalizedModel), not into x"
            )
    largest = {}
    for i, (name, _) in enumerate(named):
        smallest = values[2 * i]
        if smallest < 0:
            raise InputError(f"{name} holds negative labels (the smallest is {int(smallest)}): labels must be class "
                             f"indices >= 0")
        largest[name] = int(values[2 * i + 1])
    return largest


class _LabelRange(nn.Module):
    """``model``, checking at its first call that it returns enough logits for the labels."""

    def __init__(self, model: nn.Module, largest: dict[str, int]) -> None:
        super().__init__()
        self.training = False  # its own flag only: the attack's eval mode concerns the wrapped model
        self.model = model
        self.largest = largest
        self.pending = True

    def forward(self, z: Tensor) -> Tensor:
        out = self.model(z)
        if self.pending:
            self.pending = False
            if isinstance(out, Tensor) and out.dim() == 2:
                classes = out.shape[1]
                for name, value in self.largest.items():
                    if value >= classes:
                        raise InputError(f"{name} holds the label {value} but the model returns {classes} logits: "
                                         f"labels must lie in [0, {classes - 1}], the model's class indices")
        return out


@contextlib.contextmanager
def _attack_running(model: nn.Module, label: str) -> Iterator[None]:
    """Gradients on, every submodule in eval mode (each ``training`` flag restored on exit), and
    autograd's error for a forward that blocks gradients turned into an :class:`InputError`."""
    modes = modes_restored(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    try:
        with modes, torch.enable_grad():
            if isinstance(model, nn.Module):
                model.eval()
            yield
    except RuntimeError as err:
        if _NO_GRAD_ERROR not in str(err):
            raise
        if torch.is_inference_mode_enabled():
            where = "the call is made under torch.inference_mode(), which blocks them: call the attack outside it, or"
        else:
            where = "remove the torch.no_grad() or detach() from the forward, or"
        raise InputError(
            f"{label}: the model's forward does not let gradients reach the input ({err}): {where} use a "
            f"gradient-free attack such as \"square\""
        ) from err


@dataclass(frozen=True, kw_only=True)
class Attack(ABC):
    """Common validation of call arguments; subclasses implement :meth:`_run` and declare ``kind``."""

    name: ClassVar[str] = "attack"
    #: declared by every concrete attack (see the module docstring); :func:`kind_of` reads it
    kind: ClassVar[AttackKind]
    minimizes: ClassVar[bool] = False
    #: the attack works on images ``(N, C, H, W)`` only (e.g. Square); others take any ``(N, ...)``
    needs_images: ClassVar[bool] = False
    norm: Norm  # every subclass declares it as a field or a class constant

    def _validate_call(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, bounds: tuple[float, float]
    ) -> tuple[float, float]:
        """Types and shapes of the call arguments (no host sync); returns the checked bounds."""
        if not isinstance(model, nn.Module) and not callable(model):
            raise InputError(f"model must be an nn.Module (or callable) returning logits, got {type(model).__name__}")
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            got = f"dtype {x.dtype}, shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise InputError(f"x must be a floating-point tensor of shape (N, ...) in pixel space, got {got}")
        if x.dtype in (torch.float16, torch.bfloat16):
            raise InputError(
                f"x has dtype {x.dtype}: attacks run in float32 or float64 (in half precision their steps and "
                f"projections overshoot the budget): pass x.float() and a float32 model, or use "
                f"robustness.evaluate(..., amp=\"bf16\") to run the model in bfloat16 with verified budgets"
            )
        _check_labels("y", y, x.shape[0])
        if target is not None:
            _check_labels("target", target, x.shape[0])
        return check_bounds(bounds)

    def _prepare(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, bounds: tuple[float, float]
    ) -> tuple[nn.Module, Tensor, Tensor, Tensor | None]:
        """Checks the values of ``x`` and the labels; returns ``(model, x, y, target)`` as the attack
        gets them: the model checking the labels against its logits, ``x`` detached, labels long."""
        labels = {"y": y} if target is None else {"y": y, "target": target}
        largest = _check_values(x, labels, bounds)
        if isinstance(model, nn.Module) and largest:
            model = _LabelRange(model, largest)
        y = y.to(device=x.device, dtype=torch.long)
        target = None if target is None else target.to(device=x.device, dtype=torch.long)
        return model, x.detach(), y, target

    @abstractmethod
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, **kwargs: object) -> Tensor: ...

    @property
    def label(self) -> str:
        """The name reports use for this attack (the registry name by default)."""
        return type(self).name

    def describe(self) -> str:
        """Short human-readable summary, used in reports."""
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({fields})"


@dataclass(frozen=True, kw_only=True)
class FixedBudgetAttack(Attack):
    """An attack run at one budget ``eps`` at a time.

    Subclasses that can start from a given point set ``uses_init = True`` and accept an
    ``init`` keyword in :meth:`_run`; others never receive it.
    """

    uses_init: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", check_norm(self.norm))

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float,
        bounds: tuple[float, float] = (0.0, 1.0),
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        init: Tensor | None = None,
    ) -> Tensor:
        """Adversarial inputs of ``x``'s shape, within ``eps`` (in ``self.norm``) and ``bounds``.

        Args:
            model: classifier returning logits ``(N, classes)`` for pixel-space inputs; attacked
                in eval mode, its submodules' modes restored afterwards.
            x: float32 or float64 inputs ``(N, ...)``, finite and inside ``bounds``.
            y: true labels ``(N,)``, any integer dtype.
            eps: the budget, a real number (Python, NumPy or a 0-d tensor); 0 returns ``x``.
            bounds: the valid input range.
            target: labels to reach (targeted attack); ``None`` for untargeted.
            generator: randomness; defaults to a generator seeded with 0 on ``x``'s device.
            init: a starting point of ``x``'s shape (e.g. the best point found at a smaller
                budget), projected into the ball; iterative attacks start their first run
                there instead of at a random point, single-step attacks ignore it.
        """
        bounds = self._validate_call(model, x, y, target, bounds)
        eps = _check_eps(eps)
        if init is not None and (not isinstance(init, Tensor) or init.shape != x.shape):
            raise InputError(f"init must be a tensor of x's shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            return x.detach().clone()
        model, x, y, target = self._prepare(model, x, y, target, bounds)
        if eps == 0:
            return x.clone()
        if init is not None:
            init = clip_to_bounds(project(init.detach().to(x.dtype), x, eps, self.norm), bounds)
        if generator is None:
            generator = default_generator(x.device)
        with _attack_running(model, self.label):
            extra = {"init": init} if init is not None and self.uses_init else {}
            x_adv = self._run(model, x, y, eps=eps, bounds=bounds, target=target, generator=generator, **extra)
        return clip_to_bounds(project(x_adv.detach(), x, eps, self.norm), bounds)

    @abstractmethod
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
    ) -> Tensor: ...


@dataclass(frozen=True, kw_only=True)
class MinimizationAttack(Attack):
    """An attack that searches the smallest adversarial perturbation, answering every budget at once."""

    minimizes: ClassVar[bool] = True
    #: ``_run`` accepts ``eps`` (the largest budget the caller cares about) and may stop working on a
    #: sample once it found an adversarial input within it (FAB); others search to the end
    stops_at_eps: ClassVar[bool] = False

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float | Tensor | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Smallest adversarial inputs found (``x`` where none); with ``eps``, only those within it.

        ``eps`` is one number, or a ``(N,)`` tensor of per-sample budgets (finite, ``>= 0``): a cascade
        passes each sample the largest budget at which it is still unbroken.
        With ``eps``, an attack that declares ``stops_at_eps`` may stop searching on the samples it
        has already broken within ``eps``: their result is then within ``eps`` but not the smallest
        it could find. Call without ``eps`` for the smallest perturbations (the robustness curve).
        """
        bounds = self._validate_call(model, x, y, target, bounds)
        if eps is not None:
            eps = _check_sample_eps(eps, x)
        if x.shape[0] == 0:
            return x.detach().clone()
        model, x, y, target = self._prepare(model, x, y, target, bounds)
        if generator is None:
            generator = default_generator(x.device)
        extra = {"eps": eps} if eps is not None and self.stops_at_eps else {}
        with _attack_running(model, self.label):
            x_adv = clip_to_bounds(
                self._run(model, x, y, bounds=bounds, target=target, generator=generator, **extra).detach(), bounds
            )
        if eps is not None:
            limit = eps.to(device=x.device, dtype=x.dtype) if isinstance(eps, Tensor) else eps
            within = norm_of(x_adv - x, self.norm) <= limit
            x_adv = torch.where(within.view((-1,) + (1,) * (x.dim() - 1)), x_adv, x)
        return x_adv

    @abstractmethod
    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        bounds: tuple[float, float],
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor: ...


def kind_of(attack: Attack) -> AttackKind:
    """The ``kind`` ``attack`` declares; :class:`InputError` that says how to declare it when it has none.

    Read from the instance, so an attack whose kind depends on its settings (the ART adapter's)
    may declare it as a property.
    """
    kind = getattr(attack, "kind", None)
    if kind not in ATTACK_KINDS:
        cls = type(attack).__name__
        got = "declares no kind" if kind is None else f"declares kind={kind!r}"
        raise InputError(
            f"attack {getattr(attack, 'label', cls)!r} ({cls}) {got}: give the class one of "
            f"{', '.join(map(repr, ATTACK_KINDS))} as `kind: ClassVar[AttackKind] = ...` "
            f"(robustness.attacks.base), so that the sanity checks know what to compare it with"
        )
    return kind


# --------------------------------------------------------------------------- shared bookkeeping


class BestPoints:
    """Per sample of one attack call, the best point over all the attack's runs.

    The first point that fools the model wins (its score is ``+inf``); until one does, the point
    of highest loss. ``x`` starts as a copy of the clean input, ``score`` at ``-inf``.

    Shapes: ``x`` ``(N, ...)``, ``score`` ``(N,)`` in ``x``'s dtype.

    Example::

        best = BestPoints(x)
        for r, idx in best.runs(restarts):   # all samples, then only those not fooled yet
            run = MyRun.start(best, idx, ...)
            ...                              # run.record(...) each step; run.shrink(...)
            run.write_back()
        return best.x
    """

    def __init__(self, x: Tensor) -> None:
        self.x = x.clone()
        self.score = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)

    def runs(self, count: int) -> Iterator[tuple[int, Tensor]]:
        """``(r, idx)`` for runs ``r = 0 .. count - 1``: run 0 attacks every sample, later runs the
        samples not fooled yet; stops early once every sample is fooled. One host sync per run."""
        for r in range(count):
            if r == 0:
                idx = torch.arange(self.x.shape[0], device=self.x.device)
            else:
                idx = (self.score < math.inf).nonzero().squeeze(1)
            if idx.numel() == 0:
                return
            yield r, idx


class WorkingBatch:
    """Mutable state of the samples an attack is still working on, as a dataclass subclass.

    Every :class:`torch.Tensor` field holds one row per sample of the working batch, so that
    :meth:`keep` narrows them all together; everything else (``None``, a shared object) is left
    as it is.
    """

    def keep(self, rows: Tensor) -> None:
        """Keep only the samples ``rows`` (indices into the working batch) in every tensor field."""
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, Tensor):
                setattr(self, field.name, value[rows])


_Run = TypeVar("_Run", bound="RunState")


@dataclass(eq=False, kw_only=True)
class RunState(WorkingBatch):
    """One run's working batch (subclass it with the attack's own per-sample tensors).

    ``idx`` are the samples' positions in the call's batch; ``best_x``/``best_score`` their best
    points so far, batch-local: written back to ``points`` only when the batch shrinks and at the
    end of the run, not at every step.
    """

    points: BestPoints
    idx: Tensor
    best_x: Tensor
    best_score: Tensor

    @classmethod
    def start(cls: type[_Run], points: BestPoints, idx: Tensor, **state: Any) -> _Run:
        """A run on the samples ``idx`` of ``points``, with the subclass's own fields in ``state``."""
        return cls(points=points, idx=idx, best_x=points.x[idx], best_score=points.score[idx], **state)

    def record(self, x: Tensor, loss: Tensor, fooled: Tensor) -> None:
        """Take the candidates ``x`` where they beat the best so far: the first that fools the model
        wins (score ``+inf``), otherwise the highest ``loss``. ``loss`` and ``fooled`` are ``(n,)``."""
        score = torch.where(fooled, torch.full_like(loss, math.inf), loss)
        view = (-1,) + (1,) * (x.dim() - 1)
        self.best_x = torch.where((score > self.best_score).view(view), x, self.best_x)
        self.best_score = torch.maximum(score, self.best_score)

    def done(self) -> Tensor:
        """Boolean ``(n,)``: fooled at some step of this run (or an earlier one)."""
        return self.best_score == math.inf

    def write_back(self) -> None:
        """Store the working samples' best points in ``points``."""
        self.points.x[self.idx], self.points.score[self.idx] = self.best_x, self.best_score

    def shrink(self, rows: Tensor | None) -> bool:
        """Act on a :class:`robustness.attacks.early_stop.Shrinker`'s answer: ``None`` changes nothing;
        indices write back, then keep only those samples. ``False`` when no sample is left."""
        if rows is None:
            return True
        self.write_back()
        if rows.numel() == 0:
            return False
        self.keep(rows)
        return True
