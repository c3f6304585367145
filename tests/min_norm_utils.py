"""Helpers of the minimum-norm attack tests (FMN, DDN): the contract of a minimization attack's
output, and the cross-check against a Foolbox attack.

The cross-check compares, on the same correctly classified inputs and with the same number of
steps: the number of successes (the output differs from the input and the model, re-run here,
misclassifies it, or classifies it as the target), and the median norm over **all** the inputs,
a failure counting as ``+inf``. That median cannot be lowered by giving up on hard inputs (a
median over each attack's own successes can: an attack that finds fewer, easier adversarials
looks better), and it is finite as long as more than half of the inputs are broken.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustness.norms import norm_of


class Rescaled(nn.Module):
    """The same classifier for inputs in [-1, 1]: ``model((z + 1) / 2)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor) -> Tensor:
        return self.model((z + 1) / 2)


def predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def correct(model: nn.Module, x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` inputs the model classifies correctly."""
    keep = predict(model, x) == y
    return x[keep][:n], y[keep][:n]


def check_contract(model: nn.Module, x: Tensor, y: Tensor, adv: Tensor, bounds: tuple[float, float],
                   target: Tensor | None = None) -> Tensor:
    """Shape, dtype, bounds; every changed input verified adversarial (or of class ``target``); inputs
    misclassified already unchanged. Returns the changed mask."""
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min() >= bounds[0] and adv.max() <= bounds[1]
    changed = (adv != x).flatten(1).any(dim=1)
    pred = predict(model, adv)
    if target is None:
        assert (pred[changed] != y[changed]).all()
        assert not changed[predict(model, x) != y].any()
    else:
        assert (pred[changed] == target[changed]).all()
        assert not changed[predict(model, x) == target].any()
    return changed


def norms_or_inf(model: nn.Module, x: Tensor, y: Tensor, adv: Tensor, norm: str) -> Tensor:
    """``(N,)``: the norm of each successful perturbation, ``inf`` where the attack failed."""
    success = (predict(model, adv) != y) & (adv != x).flatten(1).any(dim=1)
    return torch.where(success, norm_of(adv - x, norm), torch.full((x.shape[0],), math.inf))


def foolbox_cross_check(model: nn.Module, x: Tensor, y: Tensor, ours: Tensor, foolbox_attack: object,
                        norm: str, *, tolerance: float = 1.02) -> tuple[Tensor, Tensor]:
    """Runs ``foolbox_attack`` on the same inputs; asserts that ours breaks at least as many inputs and that
    our median norm (failures as ``inf``) is at most ``tolerance`` times Foolbox's. Returns both norm vectors."""
    import foolbox as fb

    _, theirs, _ = foolbox_attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)  # type: ignore[operator]
    model.zero_grad(set_to_none=True)  # Foolbox back-propagates into the parameters too
    ours_n, theirs_n = norms_or_inf(model, x, y, ours, norm), norms_or_inf(model, x, y, theirs.detach(), norm)
    ours_ok, theirs_ok = int(torch.isfinite(ours_n).sum()), int(torch.isfinite(theirs_n).sum())
    assert ours_ok >= theirs_ok, f"{norm}: ours broke {ours_ok} inputs, Foolbox {theirs_ok}"
    ours_median, theirs_median = float(ours_n.median()), float(theirs_n.median())
    assert math.isfinite(ours_median), f"{norm}: ours broke only {ours_ok} of {x.shape[0]} inputs"
    assert ours_median <= tolerance * theirs_median, (
        f"{norm}: median norm ours {ours_median:.5f}, Foolbox {theirs_median:.5f} (failures as inf)")
    return ours_n, theirs_n
