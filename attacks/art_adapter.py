"""ART interop: any evasion attack of the Adversarial Robustness Toolbox, run by our runner.

:class:`ARTAttack` names a class of ``art.attacks.evasion`` (Nicolae et al. 2018, "Adversarial
Robustness Toolbox v1.0.0") and its settings; at each call it wraps the model as an ART
``PyTorchClassifier`` and runs the attack at the runner's budget. The runner then treats the
result as it treats every attack: projected onto the budget, clipped to the bounds and
re-predicted, so only verified adversarial inputs count.

What the adapter decides, and what it leaves to ART:

* The runner owns the budget and the norm: settings may not set ``eps``, ``norm`` or
  ``targeted``. An attack whose constructor takes ``eps`` gets the budget; one that takes
  ``norm`` gets ``np.inf`` (``"linf"``), ``2`` (``"l2"``) or ``1`` (``"l1"``: only the attacks of
  :data:`ART_L1`, the others refuse it); one that takes ``eps_step`` and was given none gets
  ``eps / 4`` (ten steps then walk 2.5 eps, the rule of Madry et al. and of our
  :class:`robustness.attacks.PGD`); an ``eps_step`` given in the settings is absolute, the same at every
  budget. ``batch_size`` defaults to the runner's batch, ``verbose`` (tqdm bars) to ``False``.
  Every other setting keeps ART's default.
* Minimization attacks whose constructor takes no ``eps`` (``DeepFool``, ``CarliniL2Method``,
  ``HopSkipJump``, ...) run as they are, once per budget, and the base class projects their
  result onto the budget. A minimal perturbation projected onto a smaller ball rarely stays
  adversarial, so these attacks mostly count at budgets larger than what they found; the
  runner verifies every result anyway.
* The kind the sanity checks read (:data:`robustness.attacks.base.AttackKind`) follows the
  wrapped class: ``"single-step"`` for ``FastGradientMethod``, ``"black-box"`` for ART's
  attacks that only query the model's outputs (``SquareAttack``, ``HopSkipJump``,
  ``BoundaryAttack``, ``SimBA``, ``ZooAttack``, ... :data:`ART_BLACK_BOX`), and ``"iterative"``
  for every other class, the documented default: ART's other attacks follow gradients over
  several steps, and its minimal-perturbation ones run per budget here like any fixed-budget
  attack, so none is ``"minimization"``.
* Untargeted calls pass the true labels one-hot; a call with ``target`` passes the targets
  one-hot with ``targeted=True`` (attacks without a targeted mode refuse it).
* Randomness: ART draws from NumPy's global RNG (and ``SquareAttack`` from Python's
  ``random``). For the length of one call the adapter seeds those, and torch's global RNG,
  from the ``torch.Generator`` of the call, and restores their previous states afterwards, so
  runs are reproducible and the caller's RNG states are untouched. ``HopSkipJump`` and
  ``BoundaryAttack`` draw their starting points from unseeded ``np.random.RandomState()``
  instances inside ART: they are not reproducible, whatever the seed.
* The model: ART sets it to eval mode and clears parameter gradients; the adapter restores
  every module's mode, every parameter's ``requires_grad`` and ``.grad`` afterwards (and turns
  parameter gradients off during the call, which ART does not need). Inside that guard it
  probes the model on one input, in eval mode, to count its classes. It must lie on ``x``'s
  device (ART would move it otherwise). ART sees it behind a cast to ``x``'s dtype, because
  some attacks (``HopSkipJump``, ART issue 2475) hand float64 arrays to a float32 model.

ART is imported only when an ART attack is built: importing it takes seconds, and it has side
effects of its own: ``logging.config.dictConfig``, which would close the logging handlers already
set up (the adapter shields them, and the ``tests`` logger ART configures, during the import),
and a ``~/.art/data`` directory.

Shapes: ``x`` is ``(N, ...)`` in pixel space within ``bounds`` (images channels first), ``y``
and ``target`` ``(N,)``; the result has ``x``'s shape, dtype and device.

Example::

    import robustness
    from robustness.attacks.art_adapter import ARTAttack, from_spec

    report = robustness.evaluate(model, (x, y), attacks=["pgd", "art:DeepFool(max_iter=20)"],
                                 epsilons=[0, 0.1, 0.2])
    square = ARTAttack.of("SquareAttack", max_iter=500, norm="linf")
    same = from_spec("SquareAttack(max_iter=500)", norm="linf")  # == square
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import random
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from robustness.attacks.base import L1_ATTACKS, AttackKind, FixedBudgetAttack
from robustness.errors import InputError
from robustness.model import model_device, modes_restored
from robustness.norms import Norm
from robustness.specs import LITERALS, parse_spec

__all__ = ["ART_BLACK_BOX", "ART_L1", "ARTAttack", "art_attack_names", "from_spec"]

log = logging.getLogger(__name__)

#: settings the runner sets, with why
_RUNNER_OWNED: dict[str, str] = {
    "eps": "the runner owns the budget: give budgets with epsilons=[...] (CLI: --eps)",
    "norm": "the runner owns the norm: give norm='linf', 'l2' or 'l1' to evaluate (CLI: --norm)",
    "targeted": "the runner sets it from the call's target labels",
}
_ART_NORMS: dict[str, float] = {"linf": np.inf, "l2": 2, "l1": 1}
#: ART's evasion attacks with a ``norm`` setting that attack in L1 when given ``norm=1`` (read from ART
#: 1.20.1's source). Others with a ``norm`` setting refuse 1 (HopSkipJump, UniversalPerturbation) or
#: accept it without an L1 step (SquareAttack: Linf and L2 steps only; Wasserstein: another meaning).
ART_L1: frozenset[str] = frozenset({
    "AutoAttack", "AutoConjugateGradient", "AutoProjectedGradientDescent", "BrendelBethgeAttack",
    "FastGradientMethod", "GeoDA", "MomentumIterativeMethod", "ProjectedGradientDescent",
    "ProjectedGradientDescentNumpy", "ProjectedGradientDescentPyTorch", "RescalingAutoConjugateGradient",
})
_DEFAULT_STEP_FRACTION = 0.25  # eps_step = eps / 4 when ART's constructor takes it and none was given
#: ART's evasion attacks that only query the model's outputs (scores or decisions): kind "black-box"
ART_BLACK_BOX: frozenset[str] = frozenset({
    "BoundaryAttack", "GeoDA", "GRAPHITEBlackbox", "HopSkipJump", "PixelAttack", "SignOPTAttack", "SimBA",
    "SquareAttack", "ThresholdAttack", "ZooAttack",
})
_ART_SINGLE_STEP = frozenset({"FastGradientMethod"})


def _import_art() -> None:
    """Import ART without its side effects on the caller's logging.

    ``import art`` runs ``logging.config.dictConfig``, which shuts down (closes) every handler
    already set up, and attaches an INFO stream handler to the logger named ``tests``. Hide the
    existing handlers from that shutdown and put the ``tests`` logger back as it was.
    """
    if "art" in sys.modules:
        return
    handlers = logging._handlerList[:]  # type: ignore[attr-defined]  # what dictConfig shuts down
    named = dict(logging._handlers)  # type: ignore[attr-defined]
    tests_logger = logging.getLogger("tests")
    tests_state = (tests_logger.handlers[:], tests_logger.level, tests_logger.propagate)
    logging._handlerList[:] = []  # type: ignore[attr-defined]
    try:
        import art  # noqa: F401  slow: imported only when an ART attack is asked for
    finally:
        logging._handlerList[:0] = handlers  # type: ignore[attr-defined]
        for key, handler in named.items():
            logging._handlers.setdefault(key, handler)  # type: ignore[attr-defined]
        tests_logger.handlers[:], tests_logger.level, tests_logger.propagate = tests_state


def _evasion() -> Any:
    _import_art()
    import art.attacks.evasion as evasion

    return evasion


def art_attack_names() -> list[str]:
    """The evasion attack classes of the installed ART (``art.attacks.evasion``), sorted."""
    _import_art()
    from art.attacks.attack import EvasionAttack

    return sorted(
        name
        for name, obj in vars(_evasion()).items()
        if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, EvasionAttack)
    )


def _resolve_class(name: object) -> tuple[str, type]:
    """``(canonical class name, class)``; the lookup ignores case."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"attack must be the name of a class in art.attacks.evasion, got {name!r}")
    name = name.strip()
    names = art_attack_names()
    by_lower = {n.lower(): n for n in names}
    if name.lower() in by_lower:
        canonical = by_lower[name.lower()]
        return canonical, getattr(_evasion(), canonical)
    if hasattr(_evasion(), name):
        raise InputError(f"art.attacks.evasion.{name} is not an evasion attack class: use one of {', '.join(names)}")
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(close)}?" if close else f"ART's evasion attacks are {', '.join(names)}"
    raise InputError(f"unknown ART evasion attack {name!r}: {hint}")


def _check_estimator(canonical: str, cls: type) -> None:
    """The attack must accept a classifier: the adapter wraps the model as a ``PyTorchClassifier``."""
    from art.estimators.classification import PyTorchClassifier

    mro = PyTorchClassifier.__mro__
    missing = []
    for req in getattr(cls, "_estimator_requirements", None) or ():
        options = req if isinstance(req, tuple) else (req,)
        if not any(option in mro for option in options):
            missing.append(" or ".join(getattr(o, "__name__", str(o)) for o in options))
    if missing:
        raise InputError(
            f"ART's {canonical} needs an estimator that is {', '.join(missing)}; the adapter wraps the model as "
            f"an image classifier (PyTorchClassifier), so it can run only attacks on classifiers"
        )


def _parameters(cls: type) -> tuple[str, dict[str, inspect.Parameter], bool]:
    """``(name of the estimator parameter, the other parameters, takes **kwargs)`` of ``cls``'s constructor."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)]
    if not named:
        raise InputError(f"ART's {cls.__name__} takes no estimator: the adapter cannot run it")
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    return named[0].name, {p.name: p for p in named[1:]}, var_kw


def _normalize_settings(settings: object) -> tuple[tuple[str, object], ...]:
    """Settings as a tuple of ``(key, value)`` pairs sorted by key; accepts a mapping or pairs."""
    if isinstance(settings, Mapping):
        pairs = list(settings.items())
    else:
        try:
            pairs = [tuple(p) for p in settings]  # type: ignore[union-attr]
        except TypeError:
            raise InputError(f"settings must be a dict or (key, value) pairs, got {settings!r}") from None
    seen: set[str] = set()
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str) or not pair[0].isidentifier():
            raise InputError(f"settings must be (name, value) pairs with string names, got {pair!r}")
        if pair[0] in seen:
            raise InputError(f"setting {pair[0]!r} is given twice")
        seen.add(pair[0])
        try:
            hash(pair[1])
        except TypeError:
            raise InputError(f"setting {pair[0]}={pair[1]!r} is not hashable: use {LITERALS}") from None
    return tuple(sorted(((k, v) for k, v in pairs), key=lambda kv: kv[0]))


@dataclass(frozen=True, kw_only=True)
class ARTAttack(FixedBudgetAttack):
    """An ART evasion attack run at the runner's budget (see the module docstring).

    Args:
        attack: a class name in ``art.attacks.evasion`` (any case; stored as ART spells it),
            e.g. ``"ProjectedGradientDescent"``, ``"DeepFool"``, ``"SquareAttack"``.
        settings: constructor arguments of that class, as ``(name, value)`` pairs (a dict is
            accepted and stored as pairs sorted by name); never ``eps``, ``norm``, ``targeted``.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``, the runner's norm, passed to ART's ``norm`` setting as
            ``np.inf``, 2 or 1; an ART attack with a ``norm`` setting that has no L1 mode (not in
            :data:`ART_L1`) refuses ``"l1"``.
    """

    name: ClassVar[str] = "art"
    attack: str
    settings: tuple[tuple[str, object], ...] = ()
    norm: Norm = "linf"

    def __post_init__(self) -> None:
        super().__post_init__()
        canonical, cls = _resolve_class(self.attack)
        object.__setattr__(self, "attack", canonical)
        settings = _normalize_settings(self.settings)
        object.__setattr__(self, "settings", settings)
        _check_estimator(canonical, cls)
        estimator, params, var_kw = _parameters(cls)
        valid = [p for p in params if p not in _RUNNER_OWNED]
        for key, _ in settings:
            if key in _RUNNER_OWNED:
                raise InputError(f"setting {key!r} of art:{canonical} is not allowed: {_RUNNER_OWNED[key]}")
            if key == estimator:
                raise InputError(f"setting {key!r} of art:{canonical} is not allowed: the adapter passes the model")
            if key not in params and not var_kw:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise InputError(
                    f"ART's {canonical} has no setting {key!r}: {hint}its settings are {', '.join(valid) or 'none'}"
                )
        if self.norm == "l1" and "norm" in params and canonical not in ART_L1:
            raise InputError(
                f"ART's {canonical} does not attack in L1 (its norm setting has no L1 mode): use an ART attack "
                f"that does ({', '.join(sorted(ART_L1 - {'AutoAttack'}))}) or our L1 attacks {', '.join(L1_ATTACKS)}"
            )
        given = {k for k, _ in settings}
        required = [n for n, p in params.items() if p.default is p.empty and n not in given and n not in _RUNNER_OWNED]
        if required:
            raise InputError(f"ART's {canonical} needs the settings {', '.join(required)}")

    @classmethod
    def of(cls, attack: str, settings: Mapping[str, object] | None = None, /, *, norm: str = "linf",
           **more: object) -> ARTAttack:
        """``ARTAttack.of("ProjectedGradientDescent", max_iter=20)``: settings as a dict or keywords."""
        merged = dict(settings or {})
        for key, value in more.items():
            if key in merged:
                raise InputError(f"setting {key!r} is given twice")
            merged[key] = value
        return cls(attack=attack, settings=tuple(merged.items()), norm=norm)  # type: ignore[arg-type]

    @property
    def kind(self) -> AttackKind:  # type: ignore[override]  # per instance: it follows the wrapped class
        """``"single-step"``, ``"black-box"`` or, by default, ``"iterative"`` (the module docstring)."""
        if self.attack in _ART_SINGLE_STEP:
            return "single-step"
        return "black-box" if self.attack in ART_BLACK_BOX else "iterative"

    @property
    def label(self) -> str:
        """``"art:" + attack``, e.g. ``"art:DeepFool"``: the name reports use."""
        return "art:" + self.attack

    @property
    def spec(self) -> str:
        """The text :func:`from_spec` reads back into this attack, e.g. ``"DeepFool(max_iter=20)"``."""
        if not self.settings:
            return self.attack
        return f"{self.attack}({', '.join(f'{k}={v!r}' for k, v in self.settings)})"

    def describe(self) -> str:
        return f"art:{self.spec} (norm={self.norm}; eps from the runner)"

    def _art_kwargs(self, cls: type, eps: float, targeted: bool, n: int) -> dict[str, Any]:
        _, params, _ = _parameters(cls)
        kwargs: dict[str, Any] = dict(self.settings)
        if "eps" in params:
            kwargs["eps"] = eps
            if "eps_step" in params and "eps_step" not in kwargs:
                kwargs["eps_step"] = _DEFAULT_STEP_FRACTION * eps
        if "norm" in params:
            kwargs["norm"] = _ART_NORMS[self.norm]
        if "targeted" in params:
            kwargs["targeted"] = targeted
        elif targeted:
            raise InputError(f"ART's {self.attack} has no targeted mode: call it without target")
        if "batch_size" in params and "batch_size" not in kwargs:
            kwargs["batch_size"] = n
        if "verbose" in params and "verbose" not in kwargs:
            kwargs["verbose"] = False
        return kwargs

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
    ) -> Tensor:
        from art.estimators.classification import PyTorchClassifier
        from art.exceptions import EstimatorError

        if not isinstance(model, nn.Module):
            raise InputError(f"ART attacks need an nn.Module, got {type(model).__name__}")
        if model_device(model) != x.device:
            raise InputError(f"the model is on {model_device(model)} but x on {x.device}: put both on one device")
        cls = getattr(_evasion(), self.attack)
        kwargs = self._art_kwargs(cls, eps, target is not None, x.shape[0])
        cuda = x.device.type == "cuda"
        with torch.cuda.device(x.device) if cuda else contextlib.nullcontext():  # ART uses the current device
            with _model_untouched(model), _global_rngs_seeded(generator, x.device):
                model.eval()  # the probe must not update BatchNorm statistics nor draw dropout masks
                with torch.no_grad():
                    logits = model(x[:1])
                if not isinstance(logits, Tensor) or logits.dim() != 2:
                    raise InputError("the model must return logits of shape (N, classes) for ART's PyTorchClassifier")
                classes = logits.shape[1]
                labels = (y if target is None else target).cpu().numpy()
                if labels.size and (labels.min() < 0 or labels.max() >= classes):
                    raise InputError(f"labels must lie in [0, {classes - 1}] for a model with {classes} classes")
                onehot = np.eye(classes, dtype=np.float32)[labels]
                log.debug("running ART's %s on %d inputs with %s", self.attack, x.shape[0], kwargs)
                classifier = PyTorchClassifier(
                    model=_CastInputs(model, x.dtype), loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                    nb_classes=classes, clip_values=bounds, device_type="gpu" if cuda else "cpu",
                )
                try:
                    art_attack = cls(classifier, **kwargs)
                except (ValueError, TypeError, EstimatorError) as err:
                    raise InputError(f"ART's {self.attack} rejected its settings {kwargs}: {err}") from err
                x_adv = art_attack.generate(x.detach().cpu().numpy(), y=onehot)
        return torch.as_tensor(np.asarray(x_adv)).to(device=x.device, dtype=x.dtype).reshape(x.shape)


class _CastInputs(nn.Module):
    """``model`` on inputs cast to ``dtype``: some ART attacks (HopSkipJump, ART issue 2475) hand
    float64 arrays to a float32 model. A no-op (no copy) when the dtypes already agree."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z.to(self.dtype))


@contextlib.contextmanager
def _model_untouched(model: nn.Module) -> Iterator[None]:
    """Restore every module's mode and every parameter's ``requires_grad`` and ``.grad`` on exit."""
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    with modes_restored(model):
        try:
            for p, _, _ in params:
                p.requires_grad_(False)  # ART needs gradients for the inputs only
            yield
        finally:
            for p, flag, grad in params:
                p.requires_grad_(flag)
                p.grad = grad


@contextlib.contextmanager
def _global_rngs_seeded(generator: torch.Generator, device: torch.device) -> Iterator[None]:
    """Seed NumPy's, Python's and torch's global RNGs from ``generator``; restore their states on exit."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        try:
            np.random.seed(seed)
            random.seed(seed)
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed(seed)  # the current device: x's, under torch.cuda.device
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def from_spec(spec: str, *, norm: str) -> ARTAttack:
    """``"ClassName"`` or ``"ClassName(key=value, ...)"`` (an ``art:`` prefix is allowed) -> :class:`ARTAttack`.

    Values are Python literals read with :func:`ast.literal_eval`: numbers, strings,
    ``True``/``False``, ``None`` and tuples of them (:func:`robustness.specs.parse_spec`).
    """
    text = spec.strip() if isinstance(spec, str) else spec
    if isinstance(text, str) and text.lower().startswith("art:"):
        text = text[4:].strip()
    name, settings = parse_spec(text, what="ART attack", example="ProjectedGradientDescent(max_iter=20, eps_step=0.01)")
    if not name.isidentifier():
        raise InputError(f"cannot read the ART attack {spec!r}: give a bare class name such as DeepFool")
    return ARTAttack(attack=name, settings=tuple(settings.items()), norm=norm)  # type: ignore[arg-type]
