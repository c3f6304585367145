"""Defenses: adversarial training, and input preprocessing that wraps a model and declares how
gradients pass through it.

* :class:`AdversarialTrainer`: PGD adversarial training (Madry et al. 2018), FGSM with random
  start and the catastrophic-overfitting guard (Wong et al. 2020), TRADES (Zhang et al. 2019);
  ``fit(model, loader, ...)`` returns a :class:`TrainingHistory`, checkpoints atomically and resumes.

* :class:`Preprocessor`: base class; ``gradient`` is ``"exact"`` (autograd) or ``"bpda"``
  (real transform forward, differentiable surrogate backward, the identity by default);
  randomized ones declare ``eot_samples`` (Expectation over Transformation).
* :class:`Defended` / :func:`defend`: ``model(p_k(...p_1(x)))`` in ``"adaptive"`` (BPDA and EOT
  as declared, the default) or ``"naive"`` gradient mode; :func:`gradient_mode` switches every
  :class:`Defended` in a module tree for a block; :func:`describe_defenses` lists them.
* Preprocessors: :class:`JPEG`, :class:`BitDepth` (feature squeezing), :class:`MedianSmoothing`,
  :class:`GaussianNoise`.

Example::

    from robustness.defenses import BitDepth, defend, gradient_mode
    defended = defend(model, BitDepth(bits=3))
    with gradient_mode(defended, "naive"):
        ...  # what an attack unaware of the defense sees
"""

from __future__ import annotations

from robustness.defenses.guard import OverfitGuard, collapse_reason
from robustness.defenses.jpeg import JPEG
from robustness.defenses.methods import METHODS as TRAINING_METHODS
from robustness.defenses.noise import GaussianNoise
from robustness.defenses.preprocessing import (
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
from robustness.defenses.smoothing import MedianSmoothing
from robustness.defenses.squeeze import BitDepth
from robustness.defenses.trainer import AdversarialTrainer, EpochRecord, EvalResult, TrainingHistory

__all__ = [
    "AdversarialTrainer",
    "EpochRecord",
    "EvalResult",
    "OverfitGuard",
    "TRAINING_METHODS",
    "TrainingHistory",
    "collapse_reason",
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
