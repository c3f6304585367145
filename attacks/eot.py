"""Expectation over Transformation (Athalye, Carlini and Wagner 2018, "Obfuscated Gradients Give
a False Sense of Security"; Athalye et al. 2018, "Synthesizing Robust Adversarial Examples") as a
setting of every gradient attack: ``eot_samples=k``.

A randomized model (dropout at test time, random input transformations, noise) gives a
different gradient at every forward pass; one pass is a noisy estimate of the gradient of the
expected loss, and an attack that follows it looks weaker than it is. With ``k`` draws, the
attack follows the mean of the ``k`` input gradients of its loss, and an iterate counts as
adversarial only when it fools the model on every one of the ``k`` draws (predictions are
re-checked over the draws, so a lucky draw does not count as a success). With ``k = 1`` it is
one ordinary forward and backward pass.

Example::

    draws = eot_gradient(model, x, lambda logits: F.cross_entropy(logits, y, reduction="none"),
                         lambda logits: logits.argmax(1) != y, samples=20)
    x = x + alpha * draws.grad.sign()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from robustness.errors import InputError

__all__ = ["Draws", "check_eot_samples", "eot_gradient"]


class Draws(NamedTuple):
    """What ``k`` forward passes at one point say, per sample.

    ``loss`` ``(N,)`` and ``grad`` (``x``'s shape): the means over the draws of the loss and its input
    gradient (``grad`` is ``None`` when not asked for); ``fooled`` ``(N,)``: fooled on every draw;
    ``logits`` ``(N, classes)``: the mean of the draws' logits.
    """

    loss: Tensor
    grad: Tensor | None
    fooled: Tensor
    logits: Tensor


def check_eot_samples(owner: str, value: object) -> int:
    """``value`` as the number of draws: an integer >= 1, else :class:`InputError` naming ``owner``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{owner} eot_samples must be an integer >= 1 (the forward passes each gradient is "
                         f"averaged over; 1 for a deterministic model), got {value!r}")
    return value


def eot_gradient(
    model: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    loss: Callable[[Tensor], Tensor],
    fooled: Callable[[Tensor], Tensor],
    *,
    samples: int = 1,
    with_grad: bool = True,
) -> Draws:
    """The mean loss and input gradient of ``loss(model(x))`` over ``samples`` forward passes.

    Args:
        model: the model, called ``samples`` times on ``x``.
        x: the point, ``(N, ...)``; not modified.
        loss: per-sample loss of the logits, ``(N,)``; its gradient is taken with respect to ``x``.
        fooled: per-sample success of the logits, boolean ``(N,)``.
        samples: the number of draws ``k >= 1``.
        with_grad: ``False`` skips the backward passes (``grad`` is ``None``).
    """
    check_eot_samples("eot_gradient", samples)
    total_loss: Tensor | None = None
    total_grad: Tensor | None = None
    total_logits: Tensor | None = None
    every: Tensor | None = None
    for _ in range(samples):
        x_in = x.detach().requires_grad_(with_grad)
        with torch.set_grad_enabled(with_grad):
            logits = model(x_in)
            value = loss(logits)
        if with_grad:
            (grad,) = torch.autograd.grad(value.sum(), x_in)
            total_grad = grad if total_grad is None else total_grad.add_(grad)
        value, logits = value.detach(), logits.detach()
        hit = fooled(logits)
        total_loss = value if total_loss is None else total_loss + value
        total_logits = logits if total_logits is None else total_logits + logits
        every = hit if every is None else every & hit
    if total_loss is None or total_logits is None or every is None:  # unreachable: samples >= 1
        raise RuntimeError("eot_gradient drew no sample")
    if total_grad is not None and samples > 1:
        total_grad = total_grad.div_(samples)
    if samples > 1:
        total_loss, total_logits = total_loss / samples, total_logits / samples
    return Draws(total_loss, total_grad, every, total_logits)
