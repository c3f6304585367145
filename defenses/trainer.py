"""Adversarial training: a settings object whose ``fit`` trains any classifier, resumably.

:class:`AdversarialTrainer` holds the method and its budget (immutable, validated when built);
``trainer.fit(model, loader, epochs=..., optimizer=...)`` trains the model you give it with the
optimizer and scheduler you give it, and returns a :class:`TrainingHistory`. The trainer owns
no model: the model ends in the train/eval mode (and on the device) it started in.

The settings and their checks: :mod:`robustness.defenses.training_settings`; records:
:mod:`robustness.defenses.history`; the training epoch and the evaluation pass: :mod:`robustness.defenses.loops`;
checkpoints: :mod:`robustness.defenses.checkpointing`; argument, batch, device and rank helpers:
:mod:`robustness.defenses.training_utils`.

Methods (see :mod:`robustness.defenses.methods`): ``"pgd"`` (Madry et al. 2018), ``"fgsm-rs"`` (Wong,
Rice & Kolter 2020, with the catastrophic-overfitting guard of :mod:`robustness.defenses.guard`),
``"trades"`` (Zhang et al. 2019), and ``"standard"`` (clean training, the baseline).

**Checkpoints.** With ``checkpoint=path`` the whole training state (model, optimizer,
scheduler, every random state, epoch, history; see :mod:`robustness.defenses.checkpointing`) is written
atomically after every epoch, and the history also as JSON next to it
(``run.pt.state`` -> ``run.pt.history.json``). ``resume=True`` continues from it: a run killed
at any moment (even ``kill -9``) and resumed ends with bit-for-bit the same weights as an
uninterrupted run with the same seed, on the same machine and thread count. That includes the
order of a ``DataLoader(shuffle=True)``: it draws from the global torch RNG (or its own
``generator=``), and both are restored at the epoch boundary. A missing checkpoint with
``resume=True`` starts from scratch (logged); a corrupt, truncated or foreign one, or one written
by other settings or for another architecture, raises :class:`InputError` and is never
silently replaced.

**What is measured** per epoch (:class:`EpochRecord`): mean training loss; accuracy on the
adversarial training inputs; clean training accuracy where the method computes clean logits
anyway (TRADES, standard) or with ``track_clean=True`` (one more forward pass per batch, about
+40% of a standard epoch on small CNNs, so off by default as in Madry et al. and Wong et al.);
with ``val_loader``, clean and PGD (``eval_steps``, random start) accuracy on up to
``eval_samples`` validation examples; the budget of the epoch; learning rate; seconds.

**Distributed training.** Under ``torchrun`` (an initialized process group of more than one
process, or ``fit(..., distributed=True)``, which initializes one from the torchrun environment)
``fit`` trains with ``DistributedDataParallel``: it wraps the model internally for the parameter
updates and unwraps it on exit (the caller's model object is the one trained), and the inner
attack runs on the module itself (input gradients only; see
:class:`robustness.distributed.TrainingReplica`). Each rank trains on its own shard: the
``train_loader`` must draw from a ``DistributedSampler`` (an :class:`InputError` says how to build
one), and ``fit`` calls its ``set_epoch`` every epoch. The global batch is ``world_size`` times
the loader's batch; gradients are averaged over the ranks, so a step equals a single-process step
on the global batch up to the order of float additions, except for BatchNorm (statistics per
rank's batch; rank 0's running statistics are kept after each epoch) and the random starts
(each rank draws its own: rank 0 from ``seed``, the others from streams derived from it). Loss
and accuracies are over the global batches (sums over the ranks); validation and the guard run on
rank 0, which shares the result. Rank 0 writes the checkpoint (atomically, with every rank's random
states); to resume, every rank reads it (on a filesystem they share) and restores its own random
states, so a resumed run matches an uninterrupted one with the same number of processes.

Shapes: the loaders yield ``(x, y)`` with ``x`` float ``(N, ...)`` inside ``bounds`` (pixel
space; normalization belongs inside the model) and ``y`` integer labels ``(N,)``.

Example::

    trainer = AdversarialTrainer(method="pgd", eps=0.1, norm="linf", steps=7, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = trainer.fit(model, train_loader, epochs=20, optimizer=opt, val_loader=test_loader,
                          checkpoint="run.pt.state", resume=True)
    history.final.val_robust_accuracy
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from robustness.defenses.checkpointing import restore_training_checkpoint, save_training_checkpoint
from robustness.defenses.guard import OverfitGuard
from robustness.defenses.history import EpochRecord, EvalResult, TrainingHistory, describe_epoch, epoch_postfix
from robustness.defenses.loops import evaluate_accuracy, train_epoch
from robustness.defenses.training_settings import TrainingSettings
from robustness.defenses.training_utils import (
    check_fit_arguments,
    draw_guard_batch,
    loader_generators,
    logging_to_tqdm,
    move_optimizer_state,
    rank_seed,
    TrainingModes,
    training_group,
)
from robustness.distributed import TrainingReplica, check_sharded
from robustness.errors import InputError, RobustnessWarning
from robustness.model import model_device, modes_restored

if TYPE_CHECKING:
    from robustness.distributed import ProcessGroup

__all__ = ["AdversarialTrainer", "EpochRecord", "EvalResult", "TrainingHistory"]

log = logging.getLogger(__name__)

SchedulerInterval = Literal["batch", "epoch"]


@dataclass(frozen=True, kw_only=True)
class AdversarialTrainer(TrainingSettings):
    """Settings of adversarial training; :meth:`fit` trains a model with them.

    Args:
        method: ``"pgd"`` (Madry et al. 2018), ``"fgsm-rs"`` (Wong et al. 2020), ``"trades"``
            (Zhang et al. 2019) or ``"standard"`` (clean training; ``eps`` is then only the
            validation budget).
        eps: the budget, in pixel units of ``bounds`` (``8/255`` on CIFAR, ``0.1`` on digits).
        norm: ``"linf"`` or ``"l2"``.
        steps: attack steps of PGD and TRADES (FGSM-RS takes one).
        step_size: attack step as a fraction of ``eps`` (of the current, warmed-up ``eps``);
            ``None``: ``2.5 / steps`` for PGD and TRADES, ``1.25`` for FGSM-RS.
        beta: TRADES' weight of the KL term (Zhang et al.: 6.0).
        eps_warmup_epochs: epochs with a reduced budget before the full one: epoch ``e``
            (0-based) uses ``eps * (e + 1) / (eps_warmup_epochs + 1)`` while ``e <
            eps_warmup_epochs``. With 3: ``eps/4, eps/2, 3eps/4``, then ``eps``.
        bounds: the input range.
        seed: seeds the trainer's generator (random starts); the validation attack is seeded
            from it and the epoch. Shuffling is the data loader's (seed the global torch RNG,
            or give the loader a generator).
        eval_steps: PGD steps of the validation and guard attack.
        eval_samples: validation examples used per epoch (``None``: all).
        guard: FGSM-RS only: watch for catastrophic overfitting (:mod:`robustness.defenses.guard`).
        guard_drop: largest allowed fall of the guard's PGD accuracy below its best.
        guard_samples: size of the fixed training batch the guard attacks when there is no
            ``val_loader`` (with one, the guard uses the validation robust accuracy).
        guard_steps: PGD steps of the guard's attack on that batch (Wong et al.: one batch, PGD-5).
        track_clean: also measure clean training accuracy for PGD/FGSM-RS (one more forward per batch).
        attack_mode: ``"eval"`` (default): the inner attack runs with the model in eval mode, so
            it sees the network as evaluated and BatchNorm statistics move only with the
            training passes (TRADES' code, ART); ``"train"``: in training mode (Wong et al.'s
            code). See :func:`robustness.defenses.methods.training_loss`.

    Raises :class:`InputError` for an unknown method or norm, a budget that cannot be meant
    (e.g. ``eps=8`` for Linf with bounds ``(0, 1)``: did you mean ``8/255``?), or bad numbers.
    The fields, their checks and what derives from them (:attr:`step_fraction`, :meth:`eps_at`,
    :meth:`settings`) live in :class:`robustness.defenses.training_settings.TrainingSettings`.
    """

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model: nn.Module, loader: Iterable[Any], *, eps: float | None = None,
                 device: torch.device | str | None = None, max_samples: int | None = None,
                 seed: int | None = None, steps: int | None = None) -> EvalResult:
        """Clean and PGD accuracy of ``model`` on ``loader`` at ``eps`` (default: the trainer's).

        PGD with ``steps`` (default ``eval_steps``) steps, random start and the default step ``2.5 / steps``
        (:class:`robustness.attacks.PGD`), only on the examples classified correctly. Runs in eval mode
        and restores every submodule's mode; the global RNG is left as it was (a shuffling
        loader does not disturb training). Example::

            result = trainer.evaluate(model, test_loader)      # EvalResult(clean_accuracy=..., ...)
        """
        return evaluate_accuracy(model, loader, eps=self.eps if eps is None else eps, norm=self.norm,
                                 bounds=self.bounds, steps=self.eval_steps if steps is None else steps,
                                 seed=self.seed if seed is None else seed, device=device, max_samples=max_samples)

    # ------------------------------------------------------------------ training

    def fit(
        self,
        model: nn.Module,
        train_loader: Iterable[Any],
        *,
        epochs: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        scheduler_interval: SchedulerInterval = "batch",
        val_loader: Iterable[Any] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
        device: torch.device | str | None = None,
        progress: bool = True,
        distributed: bool | None = None,
    ) -> TrainingHistory:
        """Train ``model`` in place with this method for ``epochs`` epochs; returns the history.

        Args:
            model: any classifier returning logits ``(N, classes)`` for pixel-space inputs.
            train_loader: yields ``(x, y)`` batches (e.g. a ``DataLoader``).
            epochs: total epochs (a resumed run continues up to this number).
            optimizer: any optimizer over ``model``'s parameters.
            scheduler: any learning-rate scheduler of ``optimizer`` (not ``ReduceLROnPlateau``),
                stepped after every batch (``scheduler_interval="batch"``, e.g. ``OneCycleLR``)
                or every epoch (``"epoch"``, e.g. ``MultiStepLR``).
            val_loader: validation data for the per-epoch clean and PGD accuracy (and the guard).
            checkpoint: path of the training state written after every epoch (atomically).
            resume: continue from ``checkpoint`` if it exists.
            device: where to train; default: the model's device. The model (and the
                optimizer's state) go back to the original device afterwards.
            progress: tqdm bars per epoch and batch (also off when stderr is not a terminal).
            distributed: train under ``DistributedDataParallel`` over the ranks of the
                ``torch.distributed`` process group (``torchrun``; see "Distributed training" in the
                module docstring); ``train_loader`` must then shard the data with a
                ``DistributedSampler``. ``None`` (default): when a group of more than one process
                is initialized; ``True`` initializes one from the torchrun environment if needed.

        Raises :class:`InputError` for bad arguments, loader batches of the wrong shape or type
        (float labels, inputs outside ``bounds``), a loss that became NaN, a checkpoint that
        is corrupt, foreign, from other settings or another architecture, or one that cannot
        be written (the previous one then survives).
        """
        check_fit_arguments(model, train_loader, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
                            scheduler_interval=scheduler_interval, checkpoint=checkpoint, resume=resume)
        if self.eps_warmup_epochs >= epochs and self.eps > 0:
            warnings.warn(f"eps_warmup_epochs={self.eps_warmup_epochs} with epochs={epochs}: the budget ramps up to "
                          f"eps={self.eps} over {self.eps_warmup_epochs + 1} epochs, so this run ends at "
                          f"{self.eps_at(epochs - 1):.4g} without reaching it; train longer or warm up for fewer "
                          "epochs", RobustnessWarning, stacklevel=2)
        dev = torch.device(device) if device is not None else model_device(model)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {dev} requested but CUDA is not available: use device='cpu'")
        group = training_group(distributed, dev)
        if group is not None:
            check_sharded(train_loader, group)
            if dev.type == "cuda" and dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU
        original = model_device(model)
        moved = dev != original
        train_modes = TrainingModes(model)
        with modes_restored(model):
            try:
                if moved:
                    model.to(dev)
                    move_optimizer_state(optimizer, dev)
                return self._fit(model, train_loader, epochs, optimizer, scheduler, scheduler_interval, val_loader,
                                 Path(checkpoint) if checkpoint is not None else None, resume, dev, progress, group,
                                 train_modes)
            finally:
                if moved:
                    model.to(original)
                    move_optimizer_state(optimizer, original)

    def _fit(self, model: nn.Module, train_loader: Iterable[Any], epochs: int, optimizer: torch.optim.Optimizer,
             scheduler: Any, interval: str, val_loader: Iterable[Any] | None, path: Path | None, resume: bool,
             dev: torch.device, progress: bool, group: ProcessGroup | None = None,
             train_modes: TrainingModes | None = None) -> TrainingHistory:
        lead = group is None or group.rank == 0  # logs, validates and writes checkpoints
        gen = torch.Generator(device=dev).manual_seed(rank_seed(self.seed, group))
        generators = [gen, *loader_generators(train_loader)]
        history = TrainingHistory(settings=self.settings())
        guard = OverfitGuard(self.guard_drop) if self.guarded else None
        guard_batch: dict[str, Tensor] | None = None
        start = 0
        exists = path is not None and path.exists()
        if group is not None and path is not None:
            here, exists = exists, bool(group.broadcast(exists))  # rank 0's file decides; every rank reads it
            if resume and exists and not here:
                raise InputError(f"rank {group.rank} cannot see the training checkpoint {path} that rank 0 has: "
                                 "put it on a filesystem every rank shares (or copy it to every node)")
        if resume and path is not None and exists:
            start, history, guard_batch = self._restore(path, model, optimizer, scheduler, interval, guard,
                                                        generators, epochs, group)
            if history.stopped_early or start >= epochs:
                if lead:
                    log.info("%s: training already finished (%d epochs%s)", path, start,
                             ", stopped by the overfitting guard" if history.stopped_early else "")
                return history
            if lead:
                log.info("resuming from %s after epoch %d", path, start)
        elif resume and path is not None and lead:
            log.warning("no training checkpoint at %s yet: starting from scratch", path)
        elif path is not None and exists and lead:
            log.warning("overwriting the training checkpoint %s (pass resume=True to continue it)", path)
        if guard is not None and val_loader is None and guard_batch is None:
            guard_batch = draw_guard_batch(train_loader, self.guard_samples, self.bounds)

        replica = TrainingReplica(model, dev) if group is not None else None
        try:
            return self._epochs(model, replica, train_loader, start, epochs, optimizer, scheduler, interval,
                                val_loader, path, dev, progress and lead, group, gen, generators, history, guard,
                                guard_batch, train_modes)
        finally:
            if replica is not None:
                replica.release()

    def _epochs(self, model: nn.Module, replica: TrainingReplica | None, train_loader: Iterable[Any], start: int,
                epochs: int, optimizer: torch.optim.Optimizer, scheduler: Any, interval: str,
                val_loader: Iterable[Any] | None, path: Path | None, dev: torch.device, progress: bool,
                group: ProcessGroup | None, gen: torch.Generator, generators: list[torch.Generator],
                history: TrainingHistory, guard: OverfitGuard | None,
                guard_batch: dict[str, Tensor] | None, train_modes: TrainingModes | None = None) -> TrainingHistory:
        """The epoch loop of :meth:`fit` (``replica``: the model under DDP, for the training steps)."""
        lead = group is None or group.rank == 0
        bars = progress and sys.stderr.isatty()
        redirect = logging_to_tqdm() if bars else contextlib.nullcontext()
        with redirect:
            epoch_bar = tqdm(range(start, epochs), initial=start, total=epochs, unit="epoch", disable=not bars,
                             desc=f"{self.method} training")
            for epoch in epoch_bar:
                record = train_epoch(self, replica or model, train_loader, epoch, epochs, optimizer, scheduler,
                                     interval, gen, dev, bars, group, train_modes)
                if group is not None:
                    group.broadcast_buffers(model)  # BatchNorm statistics: rank 0's, as DDP uses them
                t0 = time.perf_counter()
                if val_loader is not None:
                    result = self.evaluate(model, val_loader, device=dev, max_samples=self.eval_samples,
                                           seed=self._eval_seed(epoch)) if lead else None
                    if group is not None:  # every rank holds the same weights: rank 0 measures for all
                        result = group.broadcast(result)
                    record = replace(record, val_clean_accuracy=result.clean_accuracy,
                                     val_robust_accuracy=result.robust_accuracy)
                if guard is not None:
                    if val_loader is not None:
                        guard_acc = record.val_robust_accuracy
                    else:
                        fixed = guard_batch or {}
                        guard_acc = self.evaluate(model, [(fixed["x"], fixed["y"])], device=dev,
                                                  seed=self._eval_seed(epoch),
                                                  steps=self.guard_steps).robust_accuracy if lead else None
                        if group is not None:
                            guard_acc = group.broadcast(guard_acc)
                    record = replace(record, guard_accuracy=guard_acc)
                    reason = guard.check(epoch + 1, pgd_acc=float(guard_acc or 0.0),
                                         fgsm_acc=record.train_adversarial_accuracy, model=model)
                    if reason is not None:
                        restored = guard.restore(model)
                        history.stopped_early, history.stop_reason, history.restored_epoch = True, reason, restored
                        if lead:
                            log.warning("epoch %d: %s; restored the weights of epoch %d and stopped training",
                                        epoch + 1, reason, restored)
                record = replace(record, val_seconds=time.perf_counter() - t0)
                history.records.append(record)
                if lead:
                    log.info("%s", describe_epoch(record, epochs))
                epoch_bar.set_postfix_str(epoch_postfix(record))
                if path is not None:
                    finished = history.stopped_early or epoch + 1 == epochs
                    self._save(path, epoch + 1, finished, epochs, model, optimizer, scheduler, interval, history,
                               guard, guard_batch, generators, dev, group)
                if history.stopped_early:
                    break
            epoch_bar.close()
        return history

    def _eval_seed(self, epoch: int) -> int:
        return (self.seed * 1_000_003 + 7_919 * (epoch + 1)) % (2**62)

    # ------------------------------------------------------------------ checkpoints (robustness.defenses.checkpointing)

    def _save(self, path: Path, epoch: int, finished: bool, epochs: int, model: nn.Module,
              optimizer: torch.optim.Optimizer, scheduler: Any, interval: str, history: TrainingHistory,
              guard: OverfitGuard | None, guard_batch: dict[str, Tensor] | None,
              generators: list[torch.Generator], dev: torch.device, group: ProcessGroup | None = None) -> None:
        save_training_checkpoint(path, settings=self.settings(), epoch=epoch, finished=finished, epochs=epochs,
                                 model=model, optimizer=optimizer, scheduler=scheduler, interval=interval,
                                 history=history, guard=guard, guard_batch=guard_batch, generators=generators,
                                 dev=dev, group=group)

    def _restore(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 interval: str, guard: OverfitGuard | None, generators: list[torch.Generator],
                 epochs: int, group: ProcessGroup | None = None
                 ) -> tuple[int, TrainingHistory, dict[str, Tensor] | None]:
        return restore_training_checkpoint(path, settings=self.settings(), model=model, optimizer=optimizer,
                                           scheduler=scheduler, interval=interval, guard=guard,
                                           generators=generators, epochs=epochs, group=group)
