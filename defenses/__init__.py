"""Defenses: input preprocessing that wraps a model and declares how gradients pass through it.

* :class:`Preprocessor`: base class; ``gradient`` is ``"exact"`` (autograd) or ``"bpda"``
  (real transform forward, differentiable surrogate backward, the identity by default);
  randomized ones declare ``eot_samples`` (Expectation over Transformation).
* :class:`Defended` / :func:`defend`: ``model(p_k(...p_1(x)))`` in ``"adaptive"`` (BPDA and EOT
  as declared, the default) or ``"naive"`` gradient mode; :func:`gradient_mode` switches every
  :class:`Defended` in a module tree for a block; :func:`describe_defenses` lists them.
* Preprocessors: :class:`JPEG`, :class:`BitDepth` (feature squeezing), :class:`MedianSmoothing`,
  :class:`GaussianNoise`.

Example::

    from defenses import BitDepth, defend, gradient_mode
    defended = defend(model, BitDepth(bits=3))
    with gradient_mode(defended, "naive"):
        ...  # what an attack unaware of the defense sees
"""

from __future__ import annotations

from defenses.jpeg import JPEG
from defenses.noise import GaussianNoise
from defenses.preprocessing import (
    GRADIENT_MODES,
    Defended,
    GradientHandling,
    GradientMode,
    Preprocessor,
    check_gradient_mode,
    defend,
    describe_defenses,
    gradient_mode,
)
from defenses.smoothing import MedianSmoothing
from defenses.squeeze import BitDepth

__all__ = [
    "GRADIENT_MODES",
    "JPEG",
    "BitDepth",
    "Defended",
    "GaussianNoise",
    "GradientHandling",
    "GradientMode",
    "MedianSmoothing",
    "Preprocessor",
    "check_gradient_mode",
    "defend",
    "describe_defenses",
    "gradient_mode",
]
