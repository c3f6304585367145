"""The two passes over a data loader that :class:`robustness.defenses.AdversarialTrainer` makes.

* :func:`train_epoch`: one epoch of adversarial training steps (:func:`robustness.defenses.methods.training_loss`
  at the epoch's warmed-up budget, then an optimizer step, the scheduler per batch or per epoch),
  measuring loss and accuracies; under ``DistributedDataParallel`` the statistics are summed over
  the ranks.
* :func:`evaluate_accuracy`: clean accuracy, and PGD accuracy (random start) on the correctly
  classified examples, in eval mode, leaving every random state as it was.

Shapes: the loaders yield ``(x, y)`` with ``x`` float ``(N, ...)`` inside ``bounds`` and ``y``
integer labels ``(N,)`` (checked by :func:`robustness.defenses.training_utils.check_batch`).

Example::

    result = evaluate_accuracy(model, test_loader, eps=0.1, norm="linf", bounds=(0.0, 1.0), steps=10, seed=0)
    result.robust_accuracy
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from robustness.attacks.pgd import PGD
from robustness.defenses.fit_run import FitRun
from robustness.defenses.history import EpochRecord, EvalResult
from robustness.defenses.methods import training_loss
from robustness.defenses.training_utils import (
    check_batch,
    check_int,
    check_budget_diameter,
    check_logits,
    check_number,
)
from robustness.distributed import distributed_sampler
from robustness.errors import InputError
from robustness.model import (
    model_device,
    model_dtype,
    modes_restored,
    random_state_restored,
    reseed_random_modules,
)

__all__ = ["evaluate_accuracy", "train_epoch"]


def train_epoch(run: FitRun, epoch: int) -> EpochRecord:
    """Train ``run``'s model for epoch ``epoch`` (0-based, of ``run.epochs``) with its settings; the epoch's record.

    Draws the random starts from ``run.generator``, steps ``run.optimizer`` every batch and
    ``run.scheduler`` per ``run.interval``, trains with the submodules' flags of ``run.modes``
    and shows a tqdm bar over the batches when ``run.bars``. Over ``run.group`` the training
    steps call the :class:`~robustness.distributed.TrainingReplica` and the statistics are summed
    over the ranks. The record has no validation numbers yet. Raises :class:`InputError` for bad
    batches, an empty loader, or a loss that is not finite.
    """
    trainer, model, loader, dev, modes = run.trainer, run.trained, run.train_loader, run.device, run.modes
    optimizer, scheduler = run.optimizer, run.scheduler
    eps = trainer.eps_at(epoch)
    sampler = distributed_sampler(loader)
    if sampler is not None:
        sampler.set_epoch(epoch)  # a new shuffle every epoch, the same on every rank
    alpha = trainer.step_fraction * eps
    modes.training(model)
    n = 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    adv_correct = torch.zeros((), dtype=torch.int64, device=dev)
    clean_correct = torch.zeros((), dtype=torch.int64, device=dev)
    clean_seen = 0
    lr = float(optimizer.param_groups[0]["lr"])
    start = time.perf_counter()
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    batches = tqdm(loader, total=total, leave=False, unit="batch", disable=not run.bars,
                   desc=f"epoch {epoch + 1}/{run.epochs}")
    num_classes: int | None = None
    dtype = model_dtype(model)
    for index, batch in enumerate(batches):
        x, y = check_batch(batch, index, "training", dev, trainer.bounds, num_classes=num_classes, dtype=dtype)
        if x.shape[0] == 0:
            continue
        if num_classes is None:
            check_budget_diameter(x, trainer.eps, trainer.norm, trainer.bounds)
            with modes.evaluating(model):  # one tiny forward per epoch: no BatchNorm update, no random draw
                with torch.no_grad():
                    logits = model(x[:2])
                check_logits(logits, y[:2], y)
            num_classes = logits.shape[1]
        out = training_loss(trainer.method, model, x, y, eps=eps, norm=trainer.norm,  # type: ignore[arg-type]
                            steps=trainer.steps, alpha=alpha, beta=trainer.beta, bounds=trainer.bounds,
                            generator=run.generator, mode=trainer.attack_mode)  # type: ignore[arg-type]
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        lr = float(optimizer.param_groups[0]["lr"])  # the rate this step used
        if scheduler is not None and run.interval == "batch":
            scheduler.step()
        b = y.shape[0]
        n += b
        loss_sum += out.loss.detach().double() * b
        adv_correct += (out.adv_logits.argmax(dim=1) == y).sum()
        clean_logits = out.clean_logits
        if clean_logits is None and trainer.track_clean:
            with modes.evaluating(model), torch.no_grad():
                clean_logits = model(x)
        if clean_logits is not None:
            clean_correct += (clean_logits.argmax(dim=1) == y).sum()
            clean_seen += b
    batches.close()
    totals = [n, float(loss_sum), int(adv_correct), int(clean_correct), clean_seen]
    if run.group is not None:  # the statistics of the global batches: sums over the ranks
        totals = run.group.all_sum(totals)
    n, clean_seen = int(totals[0]), int(totals[4])
    if n == 0:
        raise InputError("the training loader yielded no examples")
    if scheduler is not None and run.interval == "epoch":
        scheduler.step()
    loss = totals[1] / n
    if not math.isfinite(loss):
        raise InputError(f"the training loss became {loss} in epoch {epoch + 1}: training diverged. Start over "
                         "with a lower learning rate (a resume would continue with this run's optimizer settings)")
    standard = trainer.method == "standard"
    return EpochRecord(
        epoch=epoch + 1, eps=eps, loss=loss,
        train_clean_accuracy=totals[3] / clean_seen if clean_seen else None,
        train_adversarial_accuracy=None if standard else totals[2] / n,
        val_clean_accuracy=None, val_robust_accuracy=None, guard_accuracy=None,
        lr=lr, seconds=time.perf_counter() - start, val_seconds=0.0,
    )


def evaluate_accuracy(model: nn.Module, loader: Iterable[Any], *, eps: float, norm: str,
                      bounds: tuple[float, float], steps: int, seed: int, device: torch.device | str | None = None,
                      max_samples: int | None = None) -> EvalResult:
    """Clean and PGD accuracy of ``model`` on (up to ``max_samples`` examples of) ``loader``.

    PGD-``steps`` at ``eps`` in ``norm`` (random start from a generator seeded with ``seed``, the
    default step ``2.5 / steps``), only on the examples classified correctly. Runs on ``device``
    (default: the model's) in eval mode, then restores the model's device and every submodule's
    mode; the global RNG and the model's randomized modules (reseeded with ``seed``) are
    left as they were. See :meth:`robustness.defenses.AdversarialTrainer.evaluate`.
    """
    original = model_device(model)
    dev = torch.device(device) if device is not None else original
    eps = check_number("eps", eps, low=0.0)
    steps = check_int("steps", steps, 1)
    attack = PGD(norm=norm, steps=steps)  # type: ignore[arg-type]
    gen = torch.Generator(device=dev).manual_seed(seed)
    n = clean = robust = 0
    with modes_restored(model), random_state_restored(model):
        reseed_random_modules(model, seed)  # the same draws at every evaluation, training's stream untouched
        try:
            if dev != original:
                model.to(dev)
            model.eval()
            num_classes: int | None = None
            dtype = model_dtype(model)
            with torch.random.fork_rng(devices=[]):
                for index, batch in enumerate(loader):
                    x, y = check_batch(batch, index, "validation", dev, bounds, num_classes=num_classes, dtype=dtype)
                    if max_samples is not None:
                        x, y = x[: max_samples - n], y[: max_samples - n]
                    if x.shape[0] == 0:
                        break
                    with torch.no_grad():
                        logits = model(x)
                    if num_classes is None:
                        check_logits(logits, y, y)
                        num_classes = logits.shape[1]
                    correct = logits.argmax(dim=1) == y
                    n += y.shape[0]
                    clean += int(correct.sum())
                    if eps > 0 and bool(correct.any()):
                        xc, yc = x[correct], y[correct]
                        x_adv = attack(model, xc, yc, eps=eps, bounds=bounds, generator=gen)
                        with torch.no_grad():
                            robust += int((model(x_adv).argmax(dim=1) == yc).sum())
                    elif eps == 0:
                        robust += int(correct.sum())
                    if max_samples is not None and n >= max_samples:
                        break
        finally:
            if dev != original:
                model.to(original)
    if n == 0:
        raise InputError("the evaluation data is empty: the loader yielded no examples")
    return EvalResult(clean / n, robust / n, n, eps, norm, steps)
