"""Adversarial training: a settings object whose ``fit`` trains any classifier, resumably.

:class:`AdversarialTrainer` holds the method and its budget (immutable, validated when built);
``trainer.fit(model, loader, epochs=..., optimizer=...)`` trains the model you give it with the
optimizer and scheduler you give it, and returns a :class:`TrainingHistory`. The trainer owns
no model: the model ends in the train/eval mode (and on the device) it started in.

Methods (see :mod:`defenses.methods`): ``"pgd"`` (Madry et al. 2018), ``"fgsm-rs"`` (Wong,
Rice & Kolter 2020, with the catastrophic-overfitting guard of :mod:`defenses.guard`),
``"trades"`` (Zhang et al. 2019), and ``"standard"`` (clean training, the baseline).

**Checkpoints.** With ``checkpoint=path`` the whole training state (model, optimizer,
scheduler, every random state, epoch, history; see :mod:`defenses.checkpointing`) is written
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
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from attacks.pgd import PGD
from defenses.checkpointing import (
    capture_rng_state,
    check_state_dict_matches,
    history_log_path,
    load_training_state,
    restore_rng_state,
    save_training_state,
    write_history_log,
)
from defenses.guard import OverfitGuard
from defenses.methods import ATTACK_MODES, METHODS, default_step_fraction, training_loss
from robustness.distributed import TrainingReplica, check_sharded, distributed_sampler
from robustness.errors import InputError
from robustness.model import model_device
from robustness.norms import NORMS, check_bounds

if TYPE_CHECKING:
    from robustness.distributed import ProcessGroup

__all__ = ["AdversarialTrainer", "EpochRecord", "EvalResult", "TrainingHistory"]

log = logging.getLogger(__name__)

SchedulerInterval = Literal["batch", "epoch"]


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
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(EpochRecord)}
        return cls(records=[EpochRecord(**{k: v for k, v in r.items() if k in names}) for r in data["records"]],
                   settings=dict(data.get("settings") or {}), stopped_early=bool(data.get("stopped_early")),
                   stop_reason=data.get("stop_reason"), restored_epoch=data.get("restored_epoch"))

    def table(self) -> str:
        """Markdown table, one row per epoch."""
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}%"

        rows = ["| epoch | eps | loss | train clean | train adv | val clean | val robust | lr | s |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.records:
            rows.append(f"| {r.epoch} | {r.eps:.4g} | {r.loss:.4f} | {pct(r.train_clean_accuracy)} | "
                        f"{pct(r.train_adversarial_accuracy)} | {pct(r.val_clean_accuracy)} | "
                        f"{pct(r.val_robust_accuracy)} | {r.lr:.3g} | {r.seconds + r.val_seconds:.1f} |")
        return "\n".join(rows)


@dataclass(frozen=True)
class EvalResult:
    """Clean and PGD accuracy of a model on some data (see :meth:`AdversarialTrainer.evaluate`)."""

    clean_accuracy: float
    robust_accuracy: float
    n_examples: int
    eps: float
    norm: str
    steps: int


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < low or (low_open and value == low) or value > high:
        bound = f"> {low}" if low_open else f">= {low}"
        raise InputError(f"{name} must be a finite number {bound}" + (f" and <= {high}" if high < math.inf else "")
                         + f", got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class AdversarialTrainer:
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
        guard: FGSM-RS only: watch for catastrophic overfitting (:mod:`defenses.guard`).
        guard_drop: largest allowed fall of the guard's PGD accuracy below its best.
        guard_samples: size of the fixed training batch the guard attacks when there is no
            ``val_loader`` (with one, the guard uses the validation robust accuracy).
        guard_steps: PGD steps of the guard's attack on that batch (Wong et al.: one batch, PGD-5).
        track_clean: also measure clean training accuracy for PGD/FGSM-RS (one more forward per batch).
        attack_mode: ``"eval"`` (default): the inner attack runs with the model in eval mode, so
            it sees the network as evaluated and BatchNorm statistics move only with the
            training passes (TRADES' code, ART); ``"train"``: in training mode (Wong et al.'s
            code). See :func:`defenses.methods.training_loss`.

    Raises :class:`InputError` for an unknown method or norm, a budget that cannot be meant
    (e.g. ``eps=8`` for Linf with bounds ``(0, 1)``: did you mean ``8/255``?), or bad numbers.
    """

    method: str
    eps: float
    norm: str = "linf"
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    eps_warmup_epochs: int = 0
    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    eval_steps: int = 10
    eval_samples: int | None = 512
    guard: bool = True
    guard_drop: float = 0.2
    guard_samples: int = 128
    guard_steps: int = 5
    track_clean: bool = False
    attack_mode: str = "eval"

    def __post_init__(self) -> None:
        method = self.method.lower().strip() if isinstance(self.method, str) else self.method
        if method not in METHODS:
            raise InputError(f"unknown training method {self.method!r}: use one of {', '.join(METHODS)}")
        object.__setattr__(self, "method", method)
        if not isinstance(self.norm, str) or self.norm.lower() not in NORMS:
            raise InputError(f"unknown norm {self.norm!r}: use one of {', '.join(NORMS)}")
        object.__setattr__(self, "norm", self.norm.lower())
        object.__setattr__(self, "bounds", check_bounds(self.bounds))
        eps = _check_number("eps", self.eps, low=0.0, low_open=True)
        span = self.bounds[1] - self.bounds[0]
        if self.norm == "linf" and eps >= span:
            hint = f" Did you mean {eps:g}/255 = {eps / 255:.4g}?" if eps >= 1 and eps / 255 < span else ""
            raise InputError(
                f"eps={eps:g} is an Linf budget at least as wide as the whole input range {span:g} of bounds "
                f"{self.bounds}: every input could become any image. Budgets are in the units of the bounds "
                f"(pixels in [0, 1] usually).{hint}"
            )
        object.__setattr__(self, "eps", eps)
        _check_int("steps", self.steps, 1)
        if self.step_size is not None:
            object.__setattr__(self, "step_size", _check_number("step_size", self.step_size, low=0.0, low_open=True))
        object.__setattr__(self, "beta", _check_number("beta", self.beta, low=0.0))
        _check_int("eps_warmup_epochs", self.eps_warmup_epochs, 0)
        _check_int("seed", self.seed, 0)
        _check_int("eval_steps", self.eval_steps, 1)
        if self.eval_samples is not None:
            _check_int("eval_samples", self.eval_samples, 1)
        if not isinstance(self.guard, bool) or not isinstance(self.track_clean, bool):
            raise InputError("guard and track_clean must be True or False")
        object.__setattr__(self, "guard_drop", _check_number("guard_drop", self.guard_drop, low=0.0, high=1.0,
                                                             low_open=True))
        _check_int("guard_samples", self.guard_samples, 1)
        _check_int("guard_steps", self.guard_steps, 1)
        if self.attack_mode not in ATTACK_MODES:
            raise InputError(f"attack_mode must be one of {', '.join(ATTACK_MODES)}, got {self.attack_mode!r}")

    # ------------------------------------------------------------------ derived settings

    @property
    def step_fraction(self) -> float:
        """The attack step as a fraction of the (current) budget."""
        return self.step_size if self.step_size is not None else default_step_fraction(self.method, self.steps)

    @property
    def guarded(self) -> bool:
        """Whether the catastrophic-overfitting guard runs (FGSM-RS with ``guard=True``)."""
        return self.method == "fgsm-rs" and self.guard

    def eps_at(self, epoch: int) -> float:
        """The budget of epoch ``epoch`` (0-based), following the linear warm-up."""
        _check_int("epoch", epoch, 0)
        if epoch < self.eps_warmup_epochs:
            return self.eps * (epoch + 1) / (self.eps_warmup_epochs + 1)
        return self.eps

    def settings(self) -> dict[str, Any]:
        """The settings as plain values (recorded in checkpoints and histories)."""
        data = asdict(self)
        data["bounds"] = list(self.bounds)
        return data

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model: nn.Module, loader: Iterable[Any], *, eps: float | None = None,
                 device: torch.device | str | None = None, max_samples: int | None = None,
                 seed: int | None = None, steps: int | None = None) -> EvalResult:
        """Clean and PGD accuracy of ``model`` on ``loader`` at ``eps`` (default: the trainer's).

        PGD with ``steps`` (default ``eval_steps``) steps, random start and the default step ``2.5 / steps``
        (:class:`attacks.PGD`), only on the examples classified correctly. Runs in eval mode
        and restores every submodule's mode; the global RNG is left as it was (a shuffling
        loader does not disturb training). Example::

            result = trainer.evaluate(model, test_loader)      # EvalResult(clean_accuracy=..., ...)
        """
        original = model_device(model)
        dev = torch.device(device) if device is not None else original
        eps = self.eps if eps is None else _check_number("eps", eps, low=0.0)
        seed = self.seed if seed is None else seed
        steps = self.eval_steps if steps is None else _check_int("steps", steps, 1)
        attack = PGD(norm=self.norm, steps=steps)  # type: ignore[arg-type]
        gen = torch.Generator(device=dev).manual_seed(seed)
        n = clean = robust = 0
        modes = [(m, m.training) for m in model.modules()]
        try:
            if dev != original:
                model.to(dev)
            model.eval()
            with torch.random.fork_rng(devices=[]):
                for index, batch in enumerate(loader):
                    x, y = self._unpack(batch, index, "validation", dev)
                    if max_samples is not None:
                        x, y = x[: max_samples - n], y[: max_samples - n]
                    if x.shape[0] == 0:
                        break
                    with torch.no_grad():
                        correct = model(x).argmax(dim=1) == y
                    n += y.shape[0]
                    clean += int(correct.sum())
                    if eps > 0 and bool(correct.any()):
                        xc, yc = x[correct], y[correct]
                        x_adv = attack(model, xc, yc, eps=eps, bounds=self.bounds, generator=gen)
                        with torch.no_grad():
                            robust += int((model(x_adv).argmax(dim=1) == yc).sum())
                    elif eps == 0:
                        robust += int(correct.sum())
                    if max_samples is not None and n >= max_samples:
                        break
        finally:
            if dev != original:
                model.to(original)
            for m, flag in modes:
                m.training = flag
        if n == 0:
            raise InputError("the evaluation data is empty: the loader yielded no examples")
        return EvalResult(clean / n, robust / n, n, eps, self.norm, steps)

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
        _check_int("epochs", epochs, 1)
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise InputError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                raise InputError("ReduceLROnPlateau needs a metric per step and is not supported: use a schedule "
                                 "(OneCycleLR, CyclicLR, MultiStepLR, CosineAnnealingLR ...)")
            if not (hasattr(scheduler, "step") and hasattr(scheduler, "state_dict")):
                raise InputError(f"scheduler must be a torch learning-rate scheduler, got {type(scheduler).__name__}")
        if scheduler_interval not in ("batch", "epoch"):
            raise InputError(f"scheduler_interval must be 'batch' or 'epoch', got {scheduler_interval!r}")
        if resume and checkpoint is None:
            raise InputError("resume=True needs checkpoint=PATH (the file to resume from)")
        if not isinstance(train_loader, Iterable):
            raise InputError(f"train_loader must be an iterable of (inputs, labels) batches, got "
                             f"{type(train_loader).__name__}")
        dev = torch.device(device) if device is not None else model_device(model)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {dev} requested but CUDA is not available: use device='cpu'")
        group = _training_group(distributed, dev)
        if group is not None:
            check_sharded(train_loader, group)
            if dev.type == "cuda" and dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU
        original = model_device(model)
        moved = dev != original
        modes = [(m, m.training) for m in model.modules()]
        try:
            if moved:
                model.to(dev)
                _move_optimizer_state(optimizer, dev)
            return self._fit(model, train_loader, epochs, optimizer, scheduler, scheduler_interval, val_loader,
                             Path(checkpoint) if checkpoint is not None else None, resume, dev, progress, group)
        finally:
            if moved:
                model.to(original)
                _move_optimizer_state(optimizer, original)
            for m, flag in modes:
                m.training = flag

    def _fit(self, model: nn.Module, train_loader: Iterable[Any], epochs: int, optimizer: torch.optim.Optimizer,
             scheduler: Any, interval: str, val_loader: Iterable[Any] | None, path: Path | None, resume: bool,
             dev: torch.device, progress: bool, group: ProcessGroup | None = None) -> TrainingHistory:
        lead = group is None or group.rank == 0  # logs, validates and writes checkpoints
        gen = torch.Generator(device=dev).manual_seed(_rank_seed(self.seed, group))
        generators = [gen, *_loader_generators(train_loader)]
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
            guard_batch = self._draw_guard_batch(train_loader)

        replica = TrainingReplica(model, dev) if group is not None else None
        try:
            return self._epochs(model, replica, train_loader, start, epochs, optimizer, scheduler, interval,
                                val_loader, path, dev, progress and lead, group, gen, generators, history, guard,
                                guard_batch)
        finally:
            if replica is not None:
                replica.release()

    def _epochs(self, model: nn.Module, replica: TrainingReplica | None, train_loader: Iterable[Any], start: int,
                epochs: int, optimizer: torch.optim.Optimizer, scheduler: Any, interval: str,
                val_loader: Iterable[Any] | None, path: Path | None, dev: torch.device, progress: bool,
                group: ProcessGroup | None, gen: torch.Generator, generators: list[torch.Generator],
                history: TrainingHistory, guard: OverfitGuard | None,
                guard_batch: dict[str, Tensor] | None) -> TrainingHistory:
        """The epoch loop of :meth:`fit` (``replica``: the model under DDP, for the training steps)."""
        lead = group is None or group.rank == 0
        bars = progress and sys.stderr.isatty()
        redirect = _logging_to_tqdm() if bars else contextlib.nullcontext()
        with redirect:
            epoch_bar = tqdm(range(start, epochs), initial=start, total=epochs, unit="epoch", disable=not bars,
                             desc=f"{self.method} training")
            for epoch in epoch_bar:
                record = self._train_epoch(replica or model, train_loader, epoch, epochs, optimizer, scheduler,
                                           interval, gen, dev, bars, group)
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
                    log.info("%s", _describe(record, epochs))
                epoch_bar.set_postfix_str(_postfix(record))
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

    def _train_epoch(self, model: nn.Module, loader: Iterable[Any], epoch: int, epochs: int,
                     optimizer: torch.optim.Optimizer, scheduler: Any, interval: str, gen: torch.Generator,
                     dev: torch.device, bars: bool, group: ProcessGroup | None = None) -> EpochRecord:
        eps = self.eps_at(epoch)
        sampler = distributed_sampler(loader)
        if sampler is not None:
            sampler.set_epoch(epoch)  # a new shuffle every epoch, the same on every rank
        alpha = self.step_fraction * eps
        model.train()
        n = 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        adv_correct = torch.zeros((), dtype=torch.int64, device=dev)
        clean_correct = torch.zeros((), dtype=torch.int64, device=dev)
        clean_seen = 0
        lr = float(optimizer.param_groups[0]["lr"])
        start = time.perf_counter()
        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        batches = tqdm(loader, total=total, leave=False, unit="batch", disable=not bars,
                       desc=f"epoch {epoch + 1}/{epochs}")
        for index, batch in enumerate(batches):
            x, y = self._unpack(batch, index, "training", dev)
            if x.shape[0] == 0:
                continue
            if index == 0:
                self._check_budget_for(x)
                model.eval()  # one tiny forward per epoch: no BatchNorm update, no random draw
                with torch.no_grad():
                    _check_logits(model(x[:2]), y[:2], y)
                model.train()
            out = training_loss(self.method, model, x, y, eps=eps, norm=self.norm, steps=self.steps,  # type: ignore[arg-type]
                                alpha=alpha, beta=self.beta, bounds=self.bounds, generator=gen,
                                mode=self.attack_mode)  # type: ignore[arg-type]
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            lr = float(optimizer.param_groups[0]["lr"])  # the rate this step used
            if scheduler is not None and interval == "batch":
                scheduler.step()
            b = y.shape[0]
            n += b
            loss_sum += out.loss.detach().double() * b
            adv_correct += (out.adv_logits.argmax(dim=1) == y).sum()
            clean_logits = out.clean_logits
            if clean_logits is None and self.track_clean:
                model.eval()
                with torch.no_grad():
                    clean_logits = model(x)
                model.train()
            if clean_logits is not None:
                clean_correct += (clean_logits.argmax(dim=1) == y).sum()
                clean_seen += b
        batches.close()
        totals = [n, float(loss_sum), int(adv_correct), int(clean_correct), clean_seen]
        if group is not None:  # the statistics of the global batches: sums over the ranks
            totals = group.all_sum(totals)
        n, clean_seen = int(totals[0]), int(totals[4])
        if n == 0:
            raise InputError("the training loader yielded no examples")
        if scheduler is not None and interval == "epoch":
            scheduler.step()
        loss = totals[1] / n
        if not math.isfinite(loss):
            raise InputError(f"the training loss became {loss} in epoch {epoch + 1}: training diverged. Lower the "
                             "learning rate (the checkpoint of the previous epoch, if any, is intact)")
        standard = self.method == "standard"
        return EpochRecord(
            epoch=epoch + 1, eps=eps, loss=loss,
            train_clean_accuracy=totals[3] / clean_seen if clean_seen else None,
            train_adversarial_accuracy=None if standard else totals[2] / n,
            val_clean_accuracy=None, val_robust_accuracy=None, guard_accuracy=None,
            lr=lr, seconds=time.perf_counter() - start, val_seconds=0.0,
        )

    def _unpack(self, batch: Any, index: int, what: str, dev: torch.device) -> tuple[Tensor, Tensor]:
        """Validate one ``(x, y)`` batch and move it to ``dev``."""
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise InputError(f"the {what} loader must yield (inputs, labels) pairs; batch {index} is a "
                             f"{type(batch).__name__}")
        x, y = batch[0], batch[1]
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise InputError(f"{what} batch {index}: inputs must be a floating-point tensor of shape (N, C, H, W) "
                             f"(or (N, features)), got {got}")
        if not isinstance(y, Tensor):
            raise InputError(f"{what} batch {index}: labels must be a tensor of integer class indices, "
                             f"got {type(y).__name__}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise InputError(f"{what} batch {index}: labels have dtype {y.dtype}; they must be integer class "
                             "indices of shape (N,): convert them with y.long() (one-hot or soft labels are not "
                             "supported)")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise InputError(f"{what} batch {index}: labels have shape {tuple(y.shape)} for {x.shape[0]} inputs; "
                             f"expected ({x.shape[0]},), one class index per input")
        if x.shape[0]:
            lo, hi = (float(v) for v in torch.aminmax(x.detach()))
            if not (self.bounds[0] <= lo and hi <= self.bounds[1]):
                raise InputError(
                    f"{what} batch {index}: inputs lie in [{lo:g}, {hi:g}], outside the bounds {self.bounds} (or are "
                    "NaN): keep inputs in pixel space and put normalization inside the model (NormalizedModel), "
                    "or set bounds= to the range of your data"
                )
            if int(y.min()) < 0:
                raise InputError(f"{what} batch {index}: labels must be >= 0, found {int(y.min())}")
        return x.to(dev, non_blocking=True), y.to(dev, non_blocking=True).long()

    def _check_budget_for(self, x: Tensor) -> None:
        if self.norm == "l2":
            span = self.bounds[1] - self.bounds[0]
            diameter = span * math.sqrt(x[0].numel())
            if self.eps >= diameter:
                raise InputError(
                    f"eps={self.eps} is an L2 budget at least the diameter {diameter:.4g} of the input box "
                    f"({x[0].numel()} values in {self.bounds}): every input could become any image. Use a smaller "
                    "budget (L2 budgets are typically 0.5 to 3 on image data in [0, 1])"
                )

    def _draw_guard_batch(self, loader: Iterable[Any]) -> dict[str, Tensor]:
        """A fixed batch of ``guard_samples`` training examples, drawn without disturbing any random state."""
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        n = 0
        gens = _loader_generators(loader)
        saved = [g.get_state() for g in gens]
        with torch.random.fork_rng(devices=[]):
            for index, batch in enumerate(loader):
                x, y = self._unpack(batch, index, "training", torch.device("cpu"))
                xs.append(x)
                ys.append(y)
                n += y.shape[0]
                if n >= self.guard_samples:
                    break
        for g, s in zip(gens, saved):
            g.set_state(s)
        if n == 0:
            raise InputError("the training loader yielded no examples")
        return {"x": torch.cat(xs)[: self.guard_samples].clone(), "y": torch.cat(ys)[: self.guard_samples].clone()}

    # ------------------------------------------------------------------ checkpoints

    def _save(self, path: Path, epoch: int, finished: bool, epochs: int, model: nn.Module,
              optimizer: torch.optim.Optimizer, scheduler: Any, interval: str, history: TrainingHistory,
              guard: OverfitGuard | None, guard_batch: dict[str, Tensor] | None,
              generators: list[torch.Generator], dev: torch.device, group: ProcessGroup | None = None) -> None:
        rng = capture_rng_state(generators, cuda=dev.type == "cuda")
        world = 1 if group is None else group.world_size
        rng_ranks = group.gather(rng) if group is not None else None  # every rank's streams, on rank 0
        if group is not None and group.rank != 0:
            return  # rank 0 writes the checkpoint
        state = {
            "epoch": epoch,
            "epochs": epochs,
            "finished": finished,
            "trainer": self.settings(),
            "optimizer_type": type(optimizer).__name__,
            "scheduler_type": type(scheduler).__name__ if scheduler is not None else None,
            "scheduler_interval": interval,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng,
            "world_size": world,
            **({"rng_ranks": rng_ranks} if world > 1 else {}),
            "history": history.to_dict(),
            "guard": guard.state_dict() if guard is not None else None,
            "guard_batch": guard_batch,
        }
        save_training_state(path, state)
        log_path = history_log_path(path)
        try:
            write_history_log(log_path, history.to_dict())
        except OSError as e:
            raise InputError(f"could not write the training log {log_path}: {e.strerror or e}; the checkpoint "
                             f"{path} was written. Free disk space and resume") from e

    def _restore(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 interval: str, guard: OverfitGuard | None, generators: list[torch.Generator],
                 epochs: int, group: ProcessGroup | None = None
                 ) -> tuple[int, TrainingHistory, dict[str, Tensor] | None]:
        state = load_training_state(path)
        world = 1 if group is None else group.world_size
        saved_world = state.get("world_size", 1)
        if saved_world != world:
            raise InputError(f"{path} was written by a run of {saved_world} process(es), this one has {world}: the "
                             f"data shards and random streams differ, so resume with {saved_world} process(es) "
                             "(or start over without resume)")
        rng = state["rng"]
        if world > 1:
            ranks = state.get("rng_ranks")
            if not isinstance(ranks, list) or len(ranks) != world:
                raise InputError(f"training checkpoint {path} is corrupt (it lacks the random states of its "
                                 f"{world} ranks); delete it to start over")
            rng = ranks[group.rank]  # type: ignore[union-attr]
        saved = state["trainer"] if isinstance(state["trainer"], Mapping) else {}
        current = self.settings()
        diffs = [f"{k}={saved.get(k)!r} there, {v!r} here" for k, v in current.items() if saved.get(k) != v]
        if diffs:
            raise InputError(f"{path} was written by different trainer settings ({'; '.join(diffs)}): resume with "
                             "the same settings, or start over without resume")
        for what, ckpt_type, ours in (("optimizer", state.get("optimizer_type"), type(optimizer).__name__),
                                      ("scheduler", state.get("scheduler_type"),
                                       type(scheduler).__name__ if scheduler is not None else None)):
            if ckpt_type != ours:
                raise InputError(f"{path} was written with {what} {ckpt_type}, but this run uses {ours}: resume with "
                                 f"the same {what}")
        if state.get("scheduler_interval", interval) != interval:
            raise InputError(f"{path} stepped its scheduler per {state.get('scheduler_interval')}, this run per "
                             f"{interval}: use the same scheduler_interval")
        done = int(state["epoch"])
        if done > epochs:
            raise InputError(f"{path} has already completed {done} epochs, more than epochs={epochs}")
        check_state_dict_matches(model, state["model"], f"training checkpoint {path}")
        saved_epochs = state.get("epochs")
        saved_total = (state.get("scheduler") or {}).get("total_steps")
        if saved_total is not None and saved_total != getattr(scheduler, "total_steps", saved_total):
            # a schedule of fixed length (OneCycleLR): its saved state would replace the new length
            raise InputError(f"{path} was written by a run of {saved_epochs} epochs whose learning-rate schedule "
                             f"({saved_total} steps) was built for that length; this run's schedule has "
                             f"{scheduler.total_steps} steps: resume with epochs={saved_epochs} (CLI: --epochs "
                             f"{saved_epochs}), or start over without resume")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise InputError(f"{path} does not fit this model/optimizer/scheduler ({detail}): resume with the ones "
                             "it was written with, or start over without resume") from e
        if guard is not None and state.get("guard"):
            guard.load_state_dict(state["guard"])
        try:
            history = TrainingHistory.from_dict(state["history"])
        except (KeyError, TypeError) as e:
            raise InputError(f"training checkpoint {path} is corrupt (history unreadable: {e}); delete it to "
                             "start over") from e
        restore_rng_state(rng, generators)
        return done, history, state.get("guard_batch")


def _training_group(requested: bool | None, dev: torch.device) -> ProcessGroup | None:
    """The process group to train over, or ``None`` for single-process training."""
    if requested is False:
        return None
    import torch.distributed as dist

    if requested is None and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    from robustness.distributed import ProcessGroup

    return ProcessGroup.current(dev)


def _rank_seed(seed: int, group: ProcessGroup | None) -> int:
    """The seed of a rank's generator (random starts): ``seed`` on rank 0, independent streams on the others."""
    if group is None or group.rank == 0:
        return seed
    from robustness.sweep import derive_seed

    return derive_seed(seed, 0xDD9, group.rank)


def _check_logits(logits: Tensor, y: Tensor, all_labels: Tensor) -> None:
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise InputError(f"the model must return logits of shape (N, classes); for {y.shape[0]} inputs it returned "
                         f"{tuple(logits.shape)}")
    if int(all_labels.max()) >= logits.shape[1]:
        raise InputError(f"label {int(all_labels.max())} is out of range for a model with {logits.shape[1]} classes")


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a data loader (or its sampler) owns, each once."""
    found: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for per_param in optimizer.state.values():
        for key, value in per_param.items():
            if isinstance(value, Tensor) and value.device != device and not (key == "step" and value.dim() == 0
                                                                               and value.device.type == "cpu"):
                per_param[key] = value.to(device)


@contextlib.contextmanager
def _logging_to_tqdm() -> Iterator[None]:
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _describe(r: EpochRecord, epochs: int) -> str:
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


def _postfix(r: EpochRecord) -> str:
    parts = [f"loss={r.loss:.3f}"]
    if r.val_robust_accuracy is not None:
        parts.append(f"val_clean={_pct(r.val_clean_accuracy)} val_pgd={_pct(r.val_robust_accuracy)}")
    return " ".join(parts)
