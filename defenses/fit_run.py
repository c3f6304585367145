"""The state of one :meth:`robustness.defenses.AdversarialTrainer.fit`: a :class:`FitRun`.

A fit trains one model with one optimizer (and scheduler) on one loader, on one device, in one
process group, drawing its random starts from one generator; it keeps a history, the overfitting
guard's state and how many epochs are done. :class:`FitRun` holds all of that, so that the training
epoch (:func:`robustness.defenses.loops.train_epoch`), the checkpoints
(:func:`robustness.defenses.checkpointing.save_training_checkpoint` and
:func:`~robustness.defenses.checkpointing.restore_training_checkpoint`) and the trainer's epoch loop
take the run instead of a dozen arguments. The trainer builds one per ``fit`` and drops it when
``fit`` returns; it owns nothing the caller gave (model, optimizer, loaders), it only points at them.

Example (inside the trainer)::

    run = FitRun(trainer=self, model=model, train_loader=loader, ..., generator=gen)
    record = train_epoch(run, epoch)
    save_training_checkpoint(run, epoch=epoch + 1, finished=False)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustness.defenses.guard import OverfitGuard
from robustness.defenses.history import TrainingHistory
from robustness.defenses.training_settings import TrainingSettings
from robustness.defenses.training_utils import TrainingModes
from robustness.distributed import ProcessGroup, TrainingReplica

__all__ = ["FitRun"]


@dataclass(eq=False)
class FitRun:
    """Everything one ``fit`` trains with and has done so far (shapes: see :mod:`robustness.defenses.trainer`).

    Attributes:
        trainer: the settings the run trains with.
        model: the caller's model, on ``device``.
        train_loader, val_loader: the training data; the validation data (or ``None``).
        optimizer, scheduler: the caller's; ``interval``: when the scheduler steps
            (``"batch"`` or ``"epoch"``).
        epochs: the epochs to train in all (a resumed run continues up to this number).
        checkpoint: the training state file written after every epoch (``None``: none).
        device: where training runs.
        group: the ranks trained over (``None``: one process).
        modes: the submodules' train/eval flags to train with.
        progress: progress bars wanted (rank 0 shows them).
        generator: the random starts' generator; ``generators``: it and the loader's own, whose
            states the checkpoints save.
        history: the records so far (a resume replaces it with the checkpoint's).
        guard: the catastrophic-overfitting guard (``None``: no guard).
        guard_batch: the guard's fixed training batch ``{"x", "y"}`` (``None`` with validation data).
        done: epochs completed before this ``fit`` started (set by a resume).
        replica: the model under ``DistributedDataParallel`` while training over ``group``.
    """

    trainer: TrainingSettings
    model: nn.Module
    train_loader: Iterable[Any]
    val_loader: Iterable[Any] | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    interval: str
    epochs: int
    checkpoint: Path | None
    device: torch.device
    group: ProcessGroup | None
    modes: TrainingModes
    progress: bool
    generator: torch.Generator
    generators: list[torch.Generator]
    history: TrainingHistory
    guard: OverfitGuard | None
    guard_batch: dict[str, Tensor] | None = None
    done: int = 0
    replica: TrainingReplica | None = None

    @property
    def lead(self) -> bool:
        """Whether this process logs, validates and writes the checkpoints (rank 0, or the only one)."""
        return self.group is None or self.group.rank == 0

    @property
    def trained(self) -> nn.Module:
        """What the training steps call: the DDP replica over ``group``, else the model itself."""
        return self.replica if self.replica is not None else self.model

    @property
    def bars(self) -> bool:
        """Whether to show tqdm bars: progress wanted, on the lead rank, and stderr a terminal."""
        return self.progress and self.lead and sys.stderr.isatty()
