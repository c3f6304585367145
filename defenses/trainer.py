"""Adversarial training: a settings object whose ``fit`` trains any classifier, resumably.

:class:`AdversarialTrainer` holds the method and its budget (immutable, validated when built);
``trainer.fit(model, loader, epochs=..., optimizer=...)`` trains the model you give it with the
optimizer and scheduler you give it, and returns a :class:`TrainingHistory`. The trainer owns
no model: the model ends in the train/eval mode (and on the device) it started in.

The settings and their checks: :mod:`robustness.defenses.training_settings`; the state of one
``fit`` (model, optimizer, loaders, device, ranks, generators, history, guard), which the pieces
below take: :mod:`robustness.defenses.fit_run`; records: :mod:`robustness.defenses.history`; the
training epoch and the evaluation pass: :mod:`robustness.defenses.loops`; checkpoints:
:mod:`robustness.defenses.checkpointing`; argument, batch, device and rank helpers:
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

**Schedules.** A ``scheduler`` steps once per epoch by default (PyTorch's convention; milestones
and ``T_max`` count epochs); ``scheduler_interval="batch"`` steps it after every batch instead
(a ``OneCycleLR`` over ``epochs * len(train_loader)`` steps, as ``robustness train`` builds).
Left to the default, a schedule whose length counts batches is refused before training, as is a
``OneCycleLR`` too short for the run.

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
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from robustness.defenses.checkpointing import restore_training_checkpoint, save_training_checkpoint
from robustness.defenses.fit_run import FitRun
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
    TrainingModes,
    training_group,
)
from robustness.distributed import TrainingReplica, check_sharded
from robustness.errors import InputError, RobustnessWarning
from robustness.model import model_device, modes_restored
from robustness.seeding import derive_seed

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
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (steps: sign, normalised gradient, SLIDE's sparse step).
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
        scheduler_interval: SchedulerInterval | None = None,
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
            scheduler: any learning-rate scheduler of ``optimizer`` (not ``ReduceLROnPlateau``).
            scheduler_interval: when ``scheduler`` steps: ``"epoch"`` (PyTorch's convention: once
                after every epoch, e.g. ``MultiStepLR(milestones=[5, 8])`` in epochs) or ``"batch"``
                (after every optimizer step, e.g. ``OneCycleLR`` with ``total_steps=epochs *
                len(train_loader)``). ``None`` (default): ``"epoch"``, refusing a ``OneCycleLR``,
                ``CosineAnnealingLR`` or ``PolynomialLR`` whose length is epochs x batches per
                epoch (a per-batch schedule that per epoch would stay near its start); pass the
                interval to say which is meant. A ``OneCycleLR`` shorter than the steps it would
                get (it would fail mid-run) is always refused.
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

        Raises :class:`InputError` for bad arguments (a schedule whose length does not fit its
        ``scheduler_interval`` included), loader batches of the wrong shape or type
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
                gen = torch.Generator(device=dev).manual_seed(derive_seed(self.seed, "train-rank", 0 if group is None else group.rank))
                run = FitRun(trainer=self, model=model, train_loader=train_loader, val_loader=val_loader,
                             optimizer=optimizer, scheduler=scheduler, interval=scheduler_interval or "epoch",
                             epochs=epochs, checkpoint=Path(checkpoint) if checkpoint is not None else None, device=dev,
                             group=group, modes=train_modes, progress=progress, generator=gen,
                             generators=[gen, *loader_generators(train_loader)],
                             history=TrainingHistory(settings=self.settings()),
                             guard=OverfitGuard(self.guard_drop) if self.guarded else None)
                return self._fit(run, resume)
            finally:
                if moved:
                    model.to(original)
                    move_optimizer_state(optimizer, original)

    def _fit(self, run: FitRun, resume: bool) -> TrainingHistory:
        """Resume ``run`` if asked (and its checkpoint exists), then train it for the epochs left."""
        if self._resume(run, resume):
            return run.history
        if run.guard is not None and run.val_loader is None and run.guard_batch is None:
            run.guard_batch = draw_guard_batch(run.train_loader, self.guard_samples, self.bounds)
        run.replica = TrainingReplica(run.model, run.device) if run.group is not None else None
        try:
            return self._epochs(run)
        finally:
            if run.replica is not None:
                run.replica.release()

    def _resume(self, run: FitRun, resume: bool) -> bool:
        """Load ``run``'s checkpoint into it when ``resume`` and it exists; whether training had already finished."""
        path, group = run.checkpoint, run.group
        exists = path is not None and path.exists()
        if group is not None and path is not None:
            here, exists = exists, bool(group.broadcast(exists))  # rank 0's file decides; every rank reads it
            if resume and exists and not here:
                raise InputError(f"rank {group.rank} cannot see the training checkpoint {path} that rank 0 has: "
                                 "put it on a filesystem every rank shares (or copy it to every node)")
        if resume and path is not None and exists:
            restore_training_checkpoint(run)
            if run.history.stopped_early or run.done >= run.epochs:
                if run.lead:
                    log.info("%s: training already finished (%d epochs%s)", path, run.done,
                             ", stopped by the overfitting guard" if run.history.stopped_early else "")
                return True
            if run.lead:
                log.info("resuming from %s after epoch %d", path, run.done)
        elif resume and path is not None and run.lead:
            log.warning("no training checkpoint at %s yet: starting from scratch", path)
        elif path is not None and exists and run.lead:
            log.warning("overwriting the training checkpoint %s (pass resume=True to continue it)", path)
        return False

    def _epochs(self, run: FitRun) -> TrainingHistory:
        """The epoch loop of :meth:`fit`: train, measure, check the guard, record, save."""
        bars = run.bars
        redirect = logging_to_tqdm() if bars else contextlib.nullcontext()
        with redirect:
            epoch_bar = tqdm(range(run.done, run.epochs), initial=run.done, total=run.epochs, unit="epoch",
                             disable=not bars, desc=f"{self.method} training")
            for epoch in epoch_bar:
                record = train_epoch(run, epoch)
                if run.group is not None:
                    run.group.broadcast_buffers(run.model)  # BatchNorm statistics: rank 0's, as DDP uses them
                t0 = time.perf_counter()
                record = self._check_guard(run, epoch, self._validate(run, epoch, record))
                record = replace(record, val_seconds=time.perf_counter() - t0)
                run.history.records.append(record)
                if run.lead:
                    log.info("%s", describe_epoch(record, run.epochs))
                epoch_bar.set_postfix_str(epoch_postfix(record))
                if run.checkpoint is not None:
                    finished = run.history.stopped_early or epoch + 1 == run.epochs
                    save_training_checkpoint(run, epoch=epoch + 1, finished=finished)
                if run.history.stopped_early:
                    break
            epoch_bar.close()
        return run.history

    def _validate(self, run: FitRun, epoch: int, record: EpochRecord) -> EpochRecord:
        """``record`` with the clean and PGD accuracy on the validation data (rank 0 measures for all)."""
        if run.val_loader is None:
            return record
        result = self.evaluate(run.model, run.val_loader, device=run.device, max_samples=self.eval_samples,
                               seed=derive_seed(self.seed, "train-eval", epoch)) if run.lead else None
        if run.group is not None:  # every rank holds the same weights: rank 0 measures for all
            result = run.group.broadcast(result)
        return replace(record, val_clean_accuracy=result.clean_accuracy, val_robust_accuracy=result.robust_accuracy)

    def _check_guard(self, run: FitRun, epoch: int, record: EpochRecord) -> EpochRecord:
        """``record`` with the guard's PGD accuracy; on a collapse, restore the last good weights and stop."""
        guard = run.guard
        if guard is None:
            return record
        if run.val_loader is not None:
            guard_acc = record.val_robust_accuracy
        else:
            fixed = run.guard_batch or {}
            guard_acc = self.evaluate(run.model, [(fixed["x"], fixed["y"])], device=run.device,
                                      seed=derive_seed(self.seed, "train-eval", epoch),
                                      steps=self.guard_steps).robust_accuracy if run.lead else None
            if run.group is not None:
                guard_acc = run.group.broadcast(guard_acc)
        record = replace(record, guard_accuracy=guard_acc)
        reason = guard.check(epoch + 1, pgd_acc=float(guard_acc or 0.0),
                             fgsm_acc=record.train_adversarial_accuracy, model=run.model)
        if reason is not None:
            restored = guard.restore(run.model)
            history = run.history
            history.stopped_early, history.stop_reason, history.restored_epoch = True, reason, restored
            if run.lead:
                log.warning("epoch %d: %s; restored the weights of epoch %d and stopped training",
                            epoch + 1, reason, restored)
        return record

