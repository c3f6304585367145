"""The inner maximisation and the training loss of each adversarial-training method.

* ``"pgd"``: PGD adversarial training (Madry et al. 2018, "Towards Deep Learning Models
  Resistant to Adversarial Attacks"): cross-entropy on the last iterate of a PGD-k walk
  from a uniform random start in the ``eps`` ball.
* ``"fgsm-rs"``: FGSM with random start ("Fast is better than free: Revisiting adversarial
  training", Wong, Rice & Kolter 2020): one gradient step of size ``alpha`` (default
  ``1.25 * eps``) from a uniform random start, projected back onto the ball.
* ``"trades"``: TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off between
  Robustness and Accuracy"): ``CE(f(x), y) + beta * KL(f(x) || f(x'))``, with ``x'`` found
  by maximising that KL from ``x + 0.001 * N(0, I)``.
* ``"standard"``: plain cross-entropy on clean inputs, the baseline every method is
  compared with (the budget only matters for the validation attack).

The attack runs with the model in eval mode by default (see :func:`training_loss`).
Every norm: for Linf a step is ``alpha * sign(grad)``, for L2 ``alpha * grad / ||grad||_2``, for
L1 SLIDE's sparse step of L1 size ``alpha`` (Tramer and Boneh 2019; the top 5% of ``|grad|`` among
the pixels that can move, :func:`robustness.attacks.pgd.l1_step`) with the exact projection onto the
ball and the box (the L2 and L1 forms of FGSM-RS and TRADES follow the Linf recipe with that
norm's step, random start and projection).

These loops are lean on purpose: :class:`robustness.attacks.PGD` keeps the best (first fooling) iterate
per sample, can drop fooled samples and does one more forward pass, which is right for
evaluation but not what Madry et al. train on (the last iterate of every sample), and a PGD-7
epoch built on it took about 20% longer on the digits CNN (``benchmarks/bench_training.py``). They reuse the project's primitives
(:func:`robustness.attacks.pgd.random_start`, :func:`robustness.attacks.fgsm.gradient_step`,
:func:`robustness.norms.project`, :func:`robustness.norms.clip_to_bounds`). Gradients are
taken with respect to the inputs only (``torch.autograd.grad``), so an attack step costs a
forward pass and an input-gradient backward pass and never touches the parameters' ``.grad``.

Shapes: ``x`` is ``(N, ...)`` in pixel space within ``bounds``, ``y`` is ``(N,)`` (int64).

Example::

    out = training_loss("pgd", model, x, y, eps=0.1, norm="linf", steps=7, alpha=0.036,
                        beta=6.0, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustness.attacks.fgsm import gradient_step
from robustness.attacks.pgd import l1_step, random_start
from robustness.errors import InputError
from robustness.model import modes_restored
from robustness.norms import Norm, clip_to_bounds, project

__all__ = [
    "ATTACK_MODES",
    "METHODS",
    "AttackMode",
    "MethodOutput",
    "attack_mode",
    "default_step_fraction",
    "fgsm_rs_examples",
    "pgd_examples",
    "trades_examples",
    "trades_loss",
    "training_loss",
]

#: Training methods, by name.
METHODS: tuple[str, ...] = ("pgd", "fgsm-rs", "trades", "standard")

#: The mode the model is in while the inner maximisation runs.
AttackMode = Literal["eval", "train"]
ATTACK_MODES: tuple[str, ...] = ("eval", "train")

#: TRADES starts its inner maximisation this close to ``x`` (Zhang et al.'s reference code).
TRADES_INIT_SCALE = 0.001


def default_step_fraction(method: str, steps: int) -> float:
    """Default step size as a fraction of ``eps``: ``2.5 / steps`` for PGD and TRADES (Madry et
    al.: the walk can cross the ball), ``1.25`` for FGSM-RS (Wong et al. 2020), 0 for standard."""
    if method == "fgsm-rs":
        return 1.25
    if method == "standard":
        return 0.0
    return 2.5 / steps


@dataclass(frozen=True)
class MethodOutput:
    """One batch's training loss and what the statistics need.

    Attributes:
        loss: scalar loss to back-propagate (mean over the batch).
        adv_logits: logits on the inputs trained on (adversarial; clean for ``"standard"``), detached.
        clean_logits: logits on the clean inputs when the method computed them (TRADES,
            standard), detached; else ``None``.
    """

    loss: Tensor
    adv_logits: Tensor
    clean_logits: Tensor | None


def _step(x_adv: Tensor, x: Tensor, grad: Tensor, alpha: float, eps: float, norm: Norm,
          bounds: tuple[float, float]) -> Tensor:
    """One ascent step, clipped to the bounds, then projected onto the ball (which keeps it in the box);
    L1: SLIDE's sparse step and the exact projection onto the ball and the box (:func:`l1_step`)."""
    if norm == "l1":
        return l1_step(x_adv, grad, x, alpha, eps, bounds)
    return project(clip_to_bounds(gradient_step(x_adv, grad, alpha, norm), bounds), x, eps, norm)


def pgd_examples(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: Norm, steps: int, alpha: float,
                 bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
    """The last iterate of PGD-``steps`` on the cross-entropy from a uniform random start (Madry et al.).

    Runs in whatever mode ``model`` is in (see :func:`attack_mode`). Returns a detached tensor shaped like ``x``.
    """
    x = x.detach()
    x_adv = clip_to_bounds(random_start(x, eps, norm, generator), bounds)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = _step(x_adv.detach(), x, grad, alpha, eps, norm, bounds)
    return x_adv.detach()


def fgsm_rs_examples(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: Norm, alpha: float,
                     bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
    """FGSM from a uniform random start, step ``alpha``, projected onto the ``eps`` ball (Wong et al. 2020)."""
    return pgd_examples(model, x, y, eps=eps, norm=norm, steps=1, alpha=alpha, bounds=bounds, generator=generator)


def trades_examples(model: nn.Module, x: Tensor, clean_probs: Tensor, *, eps: float, norm: Norm, steps: int,
                    alpha: float, bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
    """Inputs within ``eps`` of ``x`` maximising ``KL(clean_probs || softmax(model(x')))`` (Zhang et al. 2019).

    Starts at ``x + 0.001 * N(0, I)``; ``clean_probs`` is ``softmax(model(x))``, shape ``(N, classes)``.
    """
    x = x.detach()
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = project(clip_to_bounds(x + TRADES_INIT_SCALE * noise, bounds), x, eps, norm)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), clean_probs, reduction="sum")
        (grad,) = torch.autograd.grad(kl, x_adv)
        x_adv = _step(x_adv.detach(), x, grad, alpha, eps, norm, bounds)
    return x_adv.detach()


def trades_loss(clean_logits: Tensor, adv_logits: Tensor, y: Tensor, beta: float) -> Tensor:
    """``CE(clean, y) + beta * KL(softmax(clean) || softmax(adv))``, both averaged over the batch.

    Gradients flow through both logits, as in Zhang et al.'s reference implementation.
    """
    natural = F.cross_entropy(clean_logits, y)
    robust = F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1), reduction="batchmean")
    return natural + beta * robust


@contextlib.contextmanager
def attack_mode(model: nn.Module, mode: AttackMode) -> Iterator[None]:
    """Run the block with ``model`` in eval mode (``"eval"``) or as it is (``"train"``), restoring every submodule."""
    if mode == "train":
        yield
        return
    with modes_restored(model):
        model.eval()
        yield


def training_loss(method: str, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: Norm, steps: int,
                  alpha: float, beta: float, bounds: tuple[float, float], generator: torch.Generator,
                  mode: AttackMode = "eval") -> MethodOutput:
    """The loss of ``method`` on one batch (``model`` in training mode), ready for ``backward()``.

    The inner maximisation runs with the model in eval mode by default (``mode="eval"``, as in
    TRADES' reference code and ART's trainers): the attack sees the network as it will be
    evaluated, and BatchNorm running statistics are updated by the training forward passes
    only. ``mode="train"`` attacks in training mode (Wong et al.'s and Rice et al.'s code); on
    the digits CNN (PGD-7, eps 0.2, 10 epochs, 3 seeds) it gave about 4 points less PGD accuracy.
    """
    if method == "standard" or eps == 0:
        logits = model(x)
        detached = logits.detach()
        return MethodOutput(F.cross_entropy(logits, y), detached, detached)
    if method in ("pgd", "fgsm-rs"):
        k = 1 if method == "fgsm-rs" else steps
        with attack_mode(model, mode):
            x_adv = pgd_examples(model, x, y, eps=eps, norm=norm, steps=k, alpha=alpha, bounds=bounds,
                                 generator=generator)
        logits = model(x_adv)
        return MethodOutput(F.cross_entropy(logits, y), logits.detach(), None)
    if method == "trades":
        with attack_mode(model, mode):
            with torch.no_grad():
                clean_probs = F.softmax(model(x), dim=1)
            x_adv = trades_examples(model, x, clean_probs, eps=eps, norm=norm, steps=steps, alpha=alpha,
                                    bounds=bounds, generator=generator)
        clean_logits = model(x)
        adv_logits = model(x_adv)
        return MethodOutput(trades_loss(clean_logits, adv_logits, y, beta), adv_logits.detach(),
                            clean_logits.detach())
    raise InputError(f"unknown training method {method!r}: use one of {', '.join(METHODS)}")
