"""Model adapters: input normalization inside the model, and a guard that
evaluates a user's model without changing it.

Attacks work in pixel space with declared bounds (default ``(0, 1)``); a dataset's
``mean``/``std`` normalization belongs inside the model, as :class:`NormalizedModel`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from robustness.errors import InputError

__all__ = ["CallCounter", "NormalizedModel", "evaluation_mode", "model_device", "model_dtype", "modes_restored",
           "random_modules", "random_state_restored", "reseed_random_modules"]

log = logging.getLogger(__name__)


class NormalizedModel(nn.Module):
    """Wrap ``model`` so that it takes pixel-space inputs and normalizes them itself.

    ``forward(x) = model((x - mean) / std)`` with ``mean`` and ``std`` given per channel
    (dimension 1 of ``x``, shape ``(N, C, ...)``).

    Example::

        net = NormalizedModel(resnet, mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
        report = robustness.evaluate(net, (x, y), attacks=["pgd"], epsilons=[8 / 255])
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.dim() != 1 or mean_t.shape != std_t.shape or mean_t.numel() == 0:
            raise InputError("mean and std must be non-empty sequences of the same length, one value per channel")
        if not torch.all(std_t > 0):
            raise InputError(f"every std must be positive, got {std_t.tolist()}")
        self.model = model
        self.register_buffer("mean", mean_t, persistent=True)
        self.register_buffer("std", std_t, persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.mean.numel():
            raise InputError(
                f"NormalizedModel has {self.mean.numel()} channels of mean/std but the input has shape "
                f"{tuple(x.shape)}: inputs must be (N, C, ...) with C = {self.mean.numel()}"
            )
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.model((x - self.mean.view(shape)) / self.std.view(shape))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; CPU for a stateless model."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer; float32 when it has none."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def random_modules(model: nn.Module) -> list[nn.Module]:
    """The submodules that draw random numbers and let their draws be controlled: ``randomized``
    is true and they have ``reseed(seed)``, ``rng_state()`` and ``set_rng_state(state)`` (as
    :class:`robustness.defenses.GaussianNoise`), in ``model.modules()`` order."""
    return [m for m in model.modules() if getattr(m, "randomized", False) is True
            and all(callable(getattr(m, name, None)) for name in ("reseed", "rng_state", "set_rng_state"))]


def reseed_random_modules(model: nn.Module, seed: int) -> None:
    """Reseed every module of :func:`random_modules`, the ``i``-th with ``derive_seed(seed, "random-module", i)``."""
    from robustness.seeding import derive_seed

    for i, m in enumerate(random_modules(model)):
        m.reseed(derive_seed(seed, "random-module", i))


@contextlib.contextmanager
def modes_restored(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's ``training`` flag on exit, even after an exception."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


@contextlib.contextmanager
def random_state_restored(model: nn.Module) -> Iterator[None]:
    """Restore the random state of the model's :func:`random_modules` on exit."""
    states = [(m, m.rng_state()) for m in random_modules(model)]
    try:
        yield
    finally:
        for m, state in states:
            m.set_rng_state(state)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, device: torch.device | None = None) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (and on ``device``) for the block, then restore it.

    Every submodule's ``training`` flag, the model's device and the random state of its
    :func:`random_modules` are restored on exit, even after an exception. Attacks only take
    gradients with respect to inputs (``torch.autograd.grad``), so parameters, their ``.grad``
    and buffers are untouched.
    """
    original = model_device(model)
    moved = device is not None and torch.device(device) != original
    if any(m.training for m in model.modules()):
        log.info("the model was in training mode: evaluating in eval mode, and restoring its mode afterwards")
    # Module.to keeps each Parameter object but replaces every buffer by a new tensor: the user's
    # own buffer objects (a BatchNorm's running_mean, which they may hold) are put back after the move
    buffers = [(m, name, buf) for m in model.modules() for name, buf in m._buffers.items() if buf is not None]
    with modes_restored(model), random_state_restored(model):
        try:
            model.eval()
            if moved:
                model.to(device)
            yield model
        finally:
            if moved:
                model.to(original)
                with torch.no_grad():
                    for m, name, buf in buffers:
                        current = m._buffers.get(name)
                        if current is not None and current is not buf and current.shape == buf.shape:
                            buf.copy_(current)
                            m._buffers[name] = buf


class CallCounter(nn.Module):
    """Forwards to ``model``, counting calls and the samples that went through them.

    ``gradient_samples`` counts the samples of calls made with autograd on (inputs that require
    grad): the forward half of a forward+backward pass. The runner wraps the user's model in one
    for the duration of an evaluation to report the model calls of each attack; the user's
    model itself is not modified.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0
        self.samples = 0
        self.gradient_samples = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        n = int(x.shape[0]) if x.dim() else 1
        self.samples += n
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradient_samples += n
        return self.model(x)

    def snapshot(self) -> tuple[int, int, int]:
        """``(calls, samples, gradient_samples)`` so far."""
        return self.calls, self.samples, self.gradient_samples
