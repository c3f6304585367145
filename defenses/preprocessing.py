"""Preprocessing defenses: input transforms that wrap a model and declare how gradients pass.

A :class:`Preprocessor` is an ``nn.Module`` mapping pixel-space images ``(N, C, H, W)``
inside its ``bounds`` to images of the same shape inside the same bounds. Each declares what
a gradient attack should differentiate through it, so that attacks never special-case
defenses:

* ``gradient = "exact"``: the transform is differentiable (or piecewise so); autograd is
  used as is.
* ``gradient = "bpda"``: Backward Pass Differentiable Approximation (Athalye, Carlini and
  Wagner 2018, "Obfuscated Gradients Give a False Sense of Security", section 4.1). The
  forward pass runs the real, non-differentiable transform; the backward pass uses the
  gradient of a differentiable :meth:`Preprocessor.surrogate`, the identity by default.
* ``randomized = True`` with ``eot_samples``: Expectation over Transformation (Athalye et
  al. 2018, same paper, section 4.3; Athalye, Engstrom, Ilyas and Kwok 2018, "Synthesizing
  Robust Adversarial Examples"). While gradients with respect to the input are taken,
  :class:`Defended` averages the logits over ``eot_samples`` independent draws, so the
  gradient it returns is the average of the per-draw gradients.

Every preprocessor also has a ``naive`` behaviour: plain autograd through whatever the
forward pass does, and one draw of a randomized transform. For a non-differentiable
transform that is a zero (or useless) gradient: comparing ``naive`` with ``adaptive``
shows how much a defense only hides gradients instead of removing adversarial examples.

:class:`Defended` chains preprocessors in front of a model, ``forward(x) =
model(p_k(...p_1(x)))``, in the gradient mode it holds (``"adaptive"`` by default); the
:func:`gradient_mode` context manager switches every :class:`Defended` in a module tree for
a block, and :func:`describe_defenses` lists them for a report.

Example::

    from robustness.defenses import JPEG, BitDepth, defend, gradient_mode
    defended = defend(model, BitDepth(bits=3))          # adaptive: BPDA through the rounding
    adv = PGD(steps=20)(defended, x, y, eps=0.15)        # any gradient attack, unchanged
    with gradient_mode(defended, "naive"):               # what a defense-unaware attack sees
        adv_naive = PGD(steps=20)(defended, x, y, eps=0.15)
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from robustness.errors import InputError
from robustness.norms import check_bounds

__all__ = [
    "GRADIENT_MODES",
    "Defended",
    "GradientHandling",
    "GradientMode",
    "Preprocessor",
    "check_gradient_mode",
    "defend",
    "describe_defenses",
    "gradient_mode",
]

log = logging.getLogger(__name__)

GradientHandling = Literal["exact", "bpda"]
GradientMode = Literal["adaptive", "naive"]
GRADIENT_MODES: tuple[str, ...] = ("adaptive", "naive")


def check_gradient_mode(mode: object) -> GradientMode:
    """Return ``mode`` (``"adaptive"`` or ``"naive"``, any case) or raise :class:`InputError`."""
    if not isinstance(mode, str) or mode.lower() not in GRADIENT_MODES:
        raise InputError(
            f"unknown gradient mode {mode!r}: use 'adaptive' (BPDA and EOT as each defense declares, "
            f"the honest evaluation) or 'naive' (plain autograd, to see how much a defense only hides gradients)"
        )
    return mode.lower()  # type: ignore[return-value]


def check_int_setting(value: object, what: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; raises :class:`InputError` naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
        raise InputError(f"{what} must be {allowed}, got {value!r}")
    return int(value)


class _BPDA(torch.autograd.Function):
    """Forward: the preprocessor's real transform. Backward: the vector-Jacobian product of its surrogate."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, preprocessor: Preprocessor) -> Tensor:  # type: ignore[override]
        ctx.preprocessor = preprocessor
        ctx.save_for_backward(x)
        out = preprocessor.transform(x.detach())
        return out.clone() if out is x else out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return ctx.preprocessor.surrogate_backward(x, grad_out), None


class Preprocessor(nn.Module, ABC):
    """Base class of input transforms in pixel space that declare their gradient behaviour.

    Subclasses implement :meth:`transform` (the real transform, ``(N, C, H, W)`` -> same shape,
    inside ``bounds``) and :meth:`settings`, and set the class attributes:

    * ``gradient``: ``"exact"`` (autograd through :meth:`transform`) or ``"bpda"`` (the forward
      pass is :meth:`transform`, the backward pass the gradient of :meth:`surrogate`, the
      identity unless overridden; Athalye et al. 2018);
    * ``randomized``: whether :meth:`transform` draws random numbers; such a preprocessor sets
      ``self.eot_samples`` (Expectation over Transformation, applied by :class:`Defended`);
    * ``naive_gradient``: a few words saying what plain autograd gives (for reports).

    Calling a preprocessor, ``p(x, gradient_mode="adaptive")``, applies it once: with the BPDA
    surrogate in ``"adaptive"`` mode when it is declared ``bpda``, with plain autograd otherwise.
    In plain autograd a transform whose output leaves the graph (a round trip through uint8 on
    the CPU, as JPEG does) gets a zero gradient, which is what a defense-unaware attack sees.

    Args:
        bounds: the valid input range ``(low, high)``, default ``(0, 1)``; outputs stay in it.

    Example::

        class Invert(Preprocessor):
            gradient = "exact"
            def transform(self, x):
                return self.bounds[0] + self.bounds[1] - x
            def settings(self):
                return {}
    """

    gradient: ClassVar[GradientHandling] = "exact"
    randomized: ClassVar[bool] = False
    naive_gradient: ClassVar[str] = "autograd through the transform"

    def __init__(self, *, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.bounds: tuple[float, float] = check_bounds(bounds)
        self.eot_samples: int = 1

    @abstractmethod
    def transform(self, x: Tensor) -> Tensor:
        """The real transform: ``x`` ``(N, C, H, W)`` inside ``bounds`` -> same shape, inside ``bounds``."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The constructor settings, JSON-ready (bounds excluded): shown by :meth:`describe`."""

    def surrogate(self, x: Tensor) -> Tensor:
        """Differentiable stand-in for :meth:`transform` used on the BPDA backward pass: the identity."""
        return x

    @property
    def surrogate_name(self) -> str:
        """``"identity"`` for the default surrogate, else the overriding class's name."""
        return "identity" if type(self).surrogate is Preprocessor.surrogate else f"{type(self).__name__}.surrogate"

    def surrogate_backward(self, x: Tensor, grad_out: Tensor) -> Tensor:
        """The BPDA backward pass: ``grad_out`` times the Jacobian of :meth:`surrogate` at ``x``."""
        if type(self).surrogate is Preprocessor.surrogate:
            return grad_out
        with torch.enable_grad():
            xs = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.surrogate(xs), xs, grad_out, allow_unused=True)
        return grad if grad is not None else torch.zeros_like(x)

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is a floating-point ``(N, C, H, W)`` tensor."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise InputError(
                f"{type(self).__name__} takes floating-point images (N, C, H, W) in pixel space within bounds "
                f"{list(self.bounds)}, got {what}: add a channel dimension or convert to float"
            )

    def forward(self, x: Tensor, gradient_mode: GradientMode = "adaptive") -> Tensor:
        """Apply the transform once; ``gradient_mode`` chooses the BPDA surrogate or plain autograd."""
        self.check_input(x)
        if check_gradient_mode(gradient_mode) == "adaptive" and self.gradient == "bpda":
            return _BPDA.apply(x, self)
        out = self.transform(x)
        if x.requires_grad and torch.is_grad_enabled() and not out.requires_grad:
            out = out + 0.0 * x  # the transform left autograd: a defense-unaware attack sees a zero gradient
        return out

    def backward_description(self, gradient_mode: GradientMode) -> str:
        """What an attack differentiates through in ``gradient_mode``, in words (for reports)."""
        if gradient_mode == "naive":
            return self.naive_gradient + (", one draw" if self.randomized else "")
        if self.gradient == "bpda":
            text = f"BPDA ({self.surrogate_name} backward)"
        else:
            text = "exact (autograd)"
        if self.randomized:
            text += f", EOT over {self.eot_samples} draws"
        return text

    def describe(self, gradient_mode: GradientMode = "adaptive") -> dict[str, Any]:
        """JSON-ready summary: name, settings, declared gradient handling and what an attack gets."""
        return {
            "name": type(self).__name__,
            "settings": self.settings(),
            "bounds": list(self.bounds),
            "gradient": self.gradient,
            "surrogate": self.surrogate_name if self.gradient == "bpda" else None,
            "randomized": self.randomized,
            "eot_samples": self.eot_samples,
            "backward": self.backward_description(gradient_mode),
        }

    def extra_repr(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{fields}, bounds={self.bounds}, gradient={self.gradient!r}".lstrip(", ")


class Defended(nn.Module):
    """A model behind preprocessing defenses: ``forward(x) = model(p_k(...p_1(x)))``.

    In ``"adaptive"`` mode (the default) gradients follow each preprocessor's declaration: BPDA
    surrogates for ``bpda`` ones and, while a gradient with respect to ``x`` is being taken
    (grad mode on and ``x.requires_grad``), the logits averaged over ``eot_samples`` draws of the
    whole chain, the largest ``eot_samples`` of its randomized preprocessors (EOT). Without a
    gradient (predictions, ``torch.no_grad()``) the chain runs once, so a prediction is one draw.
    In ``"naive"`` mode the chain runs once under plain autograd.

    The averaged logits are the mean of per-draw logits, so the gradient of any function linear
    in the logits (a margin, a logit) is exactly the mean of the per-draw gradients; for the
    cross-entropy it is the gradient at the averaged logits.

    Args:
        model: classifier mapping pixel-space ``(N, C, H, W)`` to logits ``(N, classes)``
            (normalization inside it, e.g. :class:`robustness.NormalizedModel`).
        *preprocessors: :class:`Preprocessor` instances, applied in order; they must share bounds.
        gradient_mode: ``"adaptive"`` or ``"naive"``; also settable as an attribute and for a
            block with :func:`gradient_mode`.

    Example::

        defended = Defended(model, JPEG(quality=75), GaussianNoise(std=0.05, eot_samples=8))
        logits = defended(x)                 # (N, classes)
    """

    def __init__(
        self, model: nn.Module, *preprocessors: Preprocessor, gradient_mode: GradientMode = "adaptive"
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
        if not preprocessors:
            raise InputError("pass at least one preprocessor, e.g. defend(model, JPEG(quality=75))")
        for p in preprocessors:
            if not isinstance(p, Preprocessor):
                raise InputError(
                    f"every defense must be a robustness.defenses.Preprocessor (JPEG, BitDepth, MedianSmoothing, "
                    f"GaussianNoise, ...), got {type(p).__name__}"
                )
        bounds = {p.bounds for p in preprocessors}
        if len(bounds) > 1:
            raise InputError(
                f"the preprocessors declare different bounds {sorted(bounds)}: build them all with the bounds of "
                f"the data, e.g. bounds=(0, 1)"
            )
        self.model = model
        self.preprocessors = nn.ModuleList(preprocessors)
        self._gradient_mode: GradientMode = check_gradient_mode(gradient_mode)

    @property
    def gradient_mode(self) -> GradientMode:
        """``"adaptive"`` (BPDA and EOT as declared) or ``"naive"`` (plain autograd, one draw)."""
        return self._gradient_mode

    @gradient_mode.setter
    def gradient_mode(self, mode: GradientMode) -> None:
        self._gradient_mode = check_gradient_mode(mode)

    @property
    def bounds(self) -> tuple[float, float]:
        """The input range shared by the preprocessors."""
        return self.preprocessors[0].bounds

    @property
    def eot_samples(self) -> int:
        """Draws averaged while taking gradients in adaptive mode: 1 unless a preprocessor is randomized."""
        return max([p.eot_samples for p in self.preprocessors if p.randomized], default=1)

    def preprocess(self, x: Tensor) -> Tensor:
        """``p_k(...p_1(x))`` once, in the current gradient mode."""
        for p in self.preprocessors:
            x = p(x, gradient_mode=self._gradient_mode)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, classes)`` of the model on the preprocessed ``x`` (averaged over draws under EOT)."""
        draws = self.eot_samples
        if self._gradient_mode == "naive" or draws == 1 or not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(self.preprocess(x))
        total = self.model(self.preprocess(x))
        for _ in range(draws - 1):  # one graph per draw: memory grows with eot_samples, peak batch does not
            total = total + self.model(self.preprocess(x))
        return total / draws

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of this defense in its current gradient mode."""
        mode = self._gradient_mode
        return {
            "model": type(self.model).__name__,
            "gradient_mode": mode,
            "eot_samples": self.eot_samples if mode == "adaptive" else 1,
            "preprocessors": [p.describe(mode) for p in self.preprocessors],
        }

    def extra_repr(self) -> str:
        return f"gradient_mode={self._gradient_mode!r}"


def defend(model: nn.Module, *preprocessors: Preprocessor, gradient_mode: GradientMode = "adaptive") -> Defended:
    """``model`` behind ``preprocessors`` (applied in order): a :class:`Defended`.

    Example::

        defended = defend(model, BitDepth(bits=4), MedianSmoothing(kernel_size=3))
    """
    return Defended(model, *preprocessors, gradient_mode=gradient_mode)


@contextlib.contextmanager
def gradient_mode(module: nn.Module, mode: GradientMode) -> Iterator[nn.Module]:
    """Set ``mode`` on every :class:`Defended` inside ``module`` (itself included) for the block.

    Each one's previous mode is restored on exit, even after an exception. A module holding no
    :class:`Defended` is left alone (the block runs as is).

    Example::

        with gradient_mode(model, "naive"):
            adv = PGD()(model, x, y, eps=0.1)   # plain autograd: what a defense-unaware attack sees
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"gradient_mode needs an nn.Module, got {type(module).__name__}")
    mode = check_gradient_mode(mode)
    defended = [m for m in module.modules() if isinstance(m, Defended)]
    previous = [m.gradient_mode for m in defended]
    if not defended:
        log.debug("gradient_mode(%r): the module holds no Defended, nothing to switch", mode)
    try:
        for m in defended:
            m.gradient_mode = mode
        yield module
    finally:
        for m, old in zip(defended, previous):
            m.gradient_mode = old


def describe_defenses(module: nn.Module) -> list[dict[str, Any]]:
    """One JSON-ready dict per :class:`Defended` inside ``module``: where it sits and how gradients pass.

    Each dict holds ``path`` (the submodule name, ``""`` for ``module`` itself), ``model``,
    ``gradient_mode``, ``eot_samples`` (draws averaged per gradient in that mode) and
    ``preprocessors`` (each :meth:`Preprocessor.describe`). An undefended model gives ``[]``.

    Example::

        describe_defenses(defend(model, BitDepth(bits=3)))
        # [{'path': '', 'model': 'TinyCNN', 'gradient_mode': 'adaptive', 'eot_samples': 1,
        #   'preprocessors': [{'name': 'BitDepth', 'settings': {'bits': 3}, ..., 'gradient': 'bpda',
        #                      'backward': 'BPDA (identity backward)'}]}]
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"describe_defenses needs an nn.Module, got {type(module).__name__}")
    return [
        {"path": name, **m.describe()} for name, m in module.named_modules() if isinstance(m, Defended)
    ]
