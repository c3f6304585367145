"""What a training run records: per-epoch :class:`EpochRecord` s in a :class:`TrainingHistory`, and
the :class:`EvalResult` of :meth:`robustness.defenses.AdversarialTrainer.evaluate`.

A history is plain data: :meth:`TrainingHistory.to_dict` gives JSON- and checkpoint-safe values
(the ``history`` field of a training state, :mod:`robustness.defenses.checkpointing`, and the
``run.pt.history.json`` log), :meth:`TrainingHistory.from_dict` reads them back, and
:meth:`TrainingHistory.table` renders a Markdown table, one row per epoch. Accuracies are
fractions in [0, 1]; ``None`` where an epoch did not measure them.

Example::

    history = trainer.fit(model, loader, epochs=10, optimizer=opt, val_loader=test_loader)
    history.final.val_robust_accuracy          # the last epoch's PGD accuracy on the validation data
    print(history.table())
    same = TrainingHistory.from_dict(history.to_dict())
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from robustness.errors import InputError

__all__ = ["EpochRecord", "EvalResult", "TrainingHistory"]


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did. Accuracies are fractions in [0, 1]; ``None`` where not measured.

    Attributes:
        epoch: 1-based epoch number.
        eps: the budget used this epoch (smaller during the warm-up).
        loss: mean training loss.
        train_clean_accuracy: accuracy on the clean training inputs (TRADES, standard, or ``track_clean``).
        train_adversarial_accuracy: accuracy on the adversarial inputs trained on (``None`` for standard).
        val_clean_accuracy, val_robust_accuracy: on the validation data (PGD at the full ``eps``).
        guard_accuracy: PGD accuracy the FGSM-RS guard looked at (``None`` without guard).
        lr: learning rate of the first parameter group at the epoch's last optimizer step.
        seconds: training time of the epoch; val_seconds: validation and guard time.
    """

    epoch: int
    eps: float
    loss: float
    train_clean_accuracy: float | None
    train_adversarial_accuracy: float | None
    val_clean_accuracy: float | None
    val_robust_accuracy: float | None
    guard_accuracy: float | None
    lr: float
    seconds: float
    val_seconds: float


@dataclass
class TrainingHistory:
    """Per-epoch records of a training run, and how it ended.

    Attributes:
        records: one :class:`EpochRecord` per completed epoch.
        settings: the :class:`AdversarialTrainer` settings.
        stopped_early: the FGSM-RS guard detected catastrophic overfitting and stopped training.
        stop_reason: why, in words.
        restored_epoch: the epoch whose weights the guard restored (the model holds them).
    """

    records: list[EpochRecord] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    stop_reason: str | None = None
    restored_epoch: int | None = None

    @property
    def final(self) -> EpochRecord:
        """The last epoch's record."""
        if not self.records:
            raise InputError("the history has no epochs yet")
        return self.records[-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON and checkpoints."""
        return {"settings": dict(self.settings), "stopped_early": self.stopped_early,
                "stop_reason": self.stop_reason, "restored_epoch": self.restored_epoch,
                "records": [asdict(r) for r in self.records]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingHistory:
        """Inverse of :meth:`to_dict` (also of the JSON log, where NaN is written as ``null``)."""
        names = {f.name for f in fields(EpochRecord)}
        numbers = {"eps", "loss", "lr", "seconds", "val_seconds"}  # never None: null in JSON means NaN

        def record(r: Mapping[str, Any]) -> EpochRecord:
            return EpochRecord(**{k: math.nan if v is None and k in numbers else v for k, v in r.items() if k in names})

        return cls(records=[record(r) for r in data["records"]],
                   settings=dict(data.get("settings") or {}), stopped_early=bool(data.get("stopped_early")),
                   stop_reason=data.get("stop_reason"), restored_epoch=data.get("restored_epoch"))

    def table(self) -> str:
        """Markdown table, one row per epoch."""
        rows = ["| epoch | eps | loss | train clean | train adv | val clean | val robust | lr | s |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.records:
            rows.append(f"| {r.epoch} | {r.eps:.4g} | {r.loss:.4f} | {_pct(r.train_clean_accuracy)} | "
                        f"{_pct(r.train_adversarial_accuracy)} | {_pct(r.val_clean_accuracy)} | "
                        f"{_pct(r.val_robust_accuracy)} | {r.lr:.3g} | {r.seconds + r.val_seconds:.1f} |")
        return "\n".join(rows)


@dataclass(frozen=True)
class EvalResult:
    """Clean and PGD accuracy of a model on some data (see :meth:`robustness.defenses.AdversarialTrainer.evaluate`)."""

    clean_accuracy: float
    robust_accuracy: float
    n_examples: int
    eps: float
    norm: str
    steps: int


def _pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal, ``"-"`` when not measured."""
    return "-" if value is None else f"{100 * value:.1f}%"


def describe_epoch(r: EpochRecord, epochs: int) -> str:
    """One log line for an epoch: budget, loss, the accuracies it measured, seconds."""
    text = f"epoch {r.epoch}/{epochs}: eps {r.eps:.4g}, loss {r.loss:.4f}"
    if r.train_clean_accuracy is not None:
        text += f", train clean {_pct(r.train_clean_accuracy)}"
    if r.train_adversarial_accuracy is not None:
        text += f", train adv {_pct(r.train_adversarial_accuracy)}"
    if r.val_clean_accuracy is not None:
        text += f", val clean {_pct(r.val_clean_accuracy)}, val PGD {_pct(r.val_robust_accuracy)}"
    if r.guard_accuracy is not None and r.val_clean_accuracy is None:
        text += f", guard PGD {_pct(r.guard_accuracy)}"
    return text + f" ({r.seconds:.1f} s + {r.val_seconds:.1f} s)"


def epoch_postfix(r: EpochRecord) -> str:
    """The short summary an epoch progress bar shows after each epoch."""
    parts = [f"loss={r.loss:.3f}"]
    if r.val_robust_accuracy is not None:
        parts.append(f"val_clean={_pct(r.val_clean_accuracy)} val_pgd={_pct(r.val_robust_accuracy)}")
    return " ".join(parts)
