"""Additive Gaussian noise: a randomized defense, attacked with Expectation over Transformation.

Randomized input transforms (Cohen, Rosenfeld and Kolter 2019 for Gaussian noise and
randomized smoothing; Xie et al. 2018 for random resizing) change the prediction of an
adversarial input from draw to draw. One draw's gradient is a noisy estimate of the useful
direction; the adaptive attack averages gradients over draws (Expectation over
Transformation, Athalye et al. 2018, "Obfuscated Gradients Give a False Sense of Security"
and "Synthesizing Robust Adversarial Examples"). :class:`GaussianNoise` declares
``eot_samples`` and :class:`robustness.defenses.Defended` averages over that many draws while a gradient
with respect to the input is taken.

Reproducibility: every draw comes from a ``torch.Generator``, never the global RNG. Pass
``generator=`` to share one you own (draws are made on its device and moved to the input's),
or ``seed=`` (default 0): a generator seeded with it is made on the first input's device
(one per device, each starting from ``seed``). Two instances with the same seed draw the same
sequence on the same device; each call continues the sequence; :meth:`GaussianNoise.reseed`
starts it again. :func:`robustness.evaluate` reseeds it per batch from its own ``seed`` (so a
report does not depend on earlier draws, on resumes or on how batches are split across
processes) and puts its state back afterwards; the trainer saves its state in checkpoints.

Shapes: ``(N, C, H, W)`` (any float tensor ``(N, ...)`` works) inside ``bounds``, to the same shape.

Example::

    from robustness.defenses import GaussianNoise, defend
    defended = defend(model, GaussianNoise(std=0.1, eot_samples=8, seed=0))
    adv = PGD()(defended, x, y, eps=0.1)    # each gradient: the mean over 8 draws
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from robustness.defenses.preprocessing import GradientHandling, Preprocessor, check_int_setting
from robustness.errors import InputError

__all__ = ["GaussianNoise"]


class GaussianNoise(Preprocessor):
    """Add ``N(0, std**2)`` noise to every pixel, then clip to ``bounds``.

    Gradient: ``exact`` per draw (the clipping passes gradients where it does not clip);
    randomized, averaged over ``eot_samples`` draws by :class:`robustness.defenses.Defended` in adaptive
    mode. The noise is added in training and in eval mode alike, so the same module serves as
    training-time augmentation (one draw per batch: EOT applies only to gradients with respect
    to the input) and as the test-time defense.

    Args:
        std: noise standard deviation in pixel units, a finite number >= 0.
        eot_samples: draws averaged per input gradient in adaptive mode, an integer >= 1.
        seed: seeds this preprocessor's own generator(s); default 0. Not with ``generator``.
        generator: a ``torch.Generator`` to draw from instead (its state is the caller's).
        bounds: the valid input range, default ``(0, 1)``.

    Example::

        noise = GaussianNoise(std=0.1, seed=1)
        a, b = noise(x), noise(x)          # two different draws
        noise.reseed(); assert torch.equal(noise(x), a)
    """

    gradient: ClassVar[GradientHandling] = "exact"
    randomized: ClassVar[bool] = True
    naive_gradient: ClassVar[str] = "exact (autograd)"

    def __init__(
        self,
        std: float = 0.1,
        eot_samples: int = 8,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(bounds=bounds)
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
            raise InputError(f"GaussianNoise std must be a finite number >= 0 (pixel units), got {std!r}")
        self.std = float(std)
        self.eot_samples = check_int_setting(eot_samples, "GaussianNoise eot_samples", 1)
        if generator is not None and seed is not None:
            raise InputError("give GaussianNoise either seed= or generator=, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InputError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputError(f"GaussianNoise seed must be an integer, got {seed!r}")
        self.seed: int | None = None if generator is not None else (0 if seed is None else int(seed))
        self._generator = generator
        self._generators: dict[str, torch.Generator] = {}

    def settings(self) -> dict[str, Any]:
        return {"std": self.std, "eot_samples": self.eot_samples, "seed": self.seed}

    def reseed(self, seed: int | None = None) -> None:
        """Start the draws again from ``seed`` (default: the seed given at construction).

        With a caller's ``generator`` this calls ``generator.manual_seed(seed)``, and ``seed`` is required.
        """
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputError(f"seed must be an integer, got {seed!r}")
        if self._generator is not None:
            if seed is None:
                raise InputError("this GaussianNoise draws from a generator you passed: reseed(seed) needs a seed")
            self._generator.manual_seed(seed)
            return
        if seed is not None:
            self.seed = int(seed)
        self._generators = {}

    def rng_state(self) -> dict[str, Any]:
        """Everything the next draws depend on (the seed and every generator's state), for
        :meth:`set_rng_state`: the runner puts it back after an evaluation, the trainer saves it
        in its checkpoints."""
        return {"seed": self.seed,
                "generators": {k: g.get_state() for k, g in self._generators.items()},
                "generator": None if self._generator is None else self._generator.get_state()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`rng_state` returned (on the same devices)."""
        self.seed = state["seed"]
        self._generators = {}
        for key, saved in state["generators"].items():
            gen = torch.Generator(device=key)
            gen.set_state(saved)
            self._generators[key] = gen
        if state["generator"] is not None and self._generator is not None:
            self._generator.set_state(state["generator"])

    def generator_for(self, device: torch.device) -> torch.Generator:
        """The generator the next draw for an input on ``device`` comes from."""
        if self._generator is not None:
            return self._generator
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def transform(self, x: Tensor) -> Tensor:
        gen = self.generator_for(x.device)
        noise = torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)
        return (x + self.std * noise).clamp(*self.bounds)
