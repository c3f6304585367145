"""Catastrophic-overfitting guard for FGSM training (Wong, Rice & Kolter 2020, "Fast is better
than free", Section 5.2: FGSM training can suddenly lose all robustness to PGD within an epoch,
while its accuracy against FGSM keeps rising; they watch PGD accuracy on a held-out batch and
stop early).

After every epoch the trainer measures PGD accuracy on a held-out batch and calls
:meth:`OverfitGuard.check`. An epoch counts as **collapsed** (:func:`collapse_reason`) when,
compared with the earlier epochs,

* its PGD accuracy fell by more than ``drop`` (absolute) below the best so far, or
* its PGD accuracy is at most ``NEAR_ZERO`` (2%) although it was higher before, while the
  training accuracy against the method's own single-step examples is at least ``HIGH_FGSM``
  (50%): the signature of catastrophic overfitting even when robustness was small.

The first epoch never collapses (there is nothing to compare with). On a collapse the trainer
restores the weights of the **last good epoch** (the most recent one that passed) and **stops**:
after catastrophic overfitting FGSM training does not recover its robustness.

Example::

    guard = OverfitGuard(drop=0.2)
    guard.check(1, pgd_acc=0.40, fgsm_acc=0.55, model=net)   # None: ok, weights kept
    guard.check(2, pgd_acc=0.05, fgsm_acc=0.90, model=net)   # "PGD accuracy fell ...": collapsed
    guard.restore(net)                                        # back to epoch 1's weights; returns 1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from robustness.errors import InputError

__all__ = ["HIGH_FGSM", "NEAR_ZERO", "OverfitGuard", "collapse_reason"]

NEAR_ZERO = 0.02
HIGH_FGSM = 0.5


def collapse_reason(best: float | None, pgd_acc: float, fgsm_acc: float | None, drop: float) -> str | None:
    """Why an epoch with PGD accuracy ``pgd_acc`` counts as collapsed given the ``best`` earlier one, or ``None``.

    ``fgsm_acc`` is the training accuracy on the method's single-step adversarial examples
    (``None`` when unknown). ``best`` is ``None`` before the first epoch.
    """
    if best is None:
        return None
    if best - pgd_acc > drop:
        return f"PGD accuracy fell from {best:.1%} (best) to {pgd_acc:.1%}, more than the allowed drop of {drop:.1%}"
    if pgd_acc <= NEAR_ZERO < best and fgsm_acc is not None and fgsm_acc >= HIGH_FGSM:
        return (f"PGD accuracy fell to {pgd_acc:.1%} (best {best:.1%}) while accuracy on FGSM examples is "
                f"{fgsm_acc:.1%}: catastrophic overfitting")
    return None


@dataclass
class OverfitGuard:
    """Tracks PGD accuracy per epoch and the weights of the last good epoch (see the module doc).

    Attributes:
        drop: the largest allowed fall of PGD accuracy below its best, in [0, 1].
        best: the best PGD accuracy of a good epoch so far (``None`` before the first check).
        best_epoch: the epoch (1-based) where it was reached.
        last_good_epoch: the most recent epoch that passed.
        last_good_state: a copy of the model's ``state_dict`` at ``last_good_epoch``.
    """

    drop: float = 0.2
    best: float | None = None
    best_epoch: int | None = None
    last_good_epoch: int | None = None
    last_good_state: dict[str, Tensor] | None = field(default=None, repr=False)

    def check(self, epoch: int, *, pgd_acc: float, fgsm_acc: float | None, model: nn.Module) -> str | None:
        """Record epoch ``epoch``; returns why it collapsed, or ``None`` (then its weights are kept as good)."""
        reason = collapse_reason(self.best, pgd_acc, fgsm_acc, self.drop)
        if reason is None:
            if self.best is None or pgd_acc > self.best:
                self.best, self.best_epoch = pgd_acc, epoch
            self.last_good_epoch = epoch
            self.last_good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return reason

    def restore(self, model: nn.Module) -> int:
        """Load the last good weights into ``model``; returns their epoch."""
        if self.last_good_state is None or self.last_good_epoch is None:
            raise InputError("the overfitting guard has no good epoch to restore yet")
        model.load_state_dict(self.last_good_state)
        return self.last_good_epoch

    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors, for the training checkpoint."""
        return {"drop": self.drop, "best": self.best, "best_epoch": self.best_epoch,
                "last_good_epoch": self.last_good_epoch, "last_good_state": self.last_good_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self.drop = float(state["drop"])
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.last_good_epoch = state["last_good_epoch"]
        self.last_good_state = state["last_good_state"]
