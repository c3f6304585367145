"""Attack objectives (to be maximised) and the success criterion, per sample.

Untargeted: raise the loss of the true label ``y``. Targeted (``target`` given):
make the model predict ``target``.
"""

from __future__ import annotations

from typing import Literal


import torch.nn.functional as F
from torch import Tensor

__all__ = ["Loss", "LOSSES", "objective", "margin", "is_adversarial"]

Loss = Literal["ce", "margin"]
LOSSES: tuple[str, ...] = ("ce", "margin")


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``max_{j != label} z_j - z_label`` per sample: positive exactly when ``label`` is not the top class.

    Correct for negative logits too: the true class is masked with ``-inf``, never with 0.
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - true


def objective(logits: Tensor, y: Tensor, loss: str, target: Tensor | None = None) -> Tensor:
    """Per-sample objective for the attack to maximise, shape ``(N,)``."""
    if loss == "ce":
        if target is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, target, reduction="none")
    if target is None:
        return margin(logits, y)
    return -margin(logits, target)


def is_adversarial(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Boolean ``(N,)``: misclassified (untargeted) or classified as ``target`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred != y if target is None else pred == target


def _check_loss(loss: str) -> None:
    from robustness.errors import InputError

    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")


