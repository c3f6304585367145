"""The plumbing of :meth:`robustness.defenses.AdversarialTrainer.fit`: argument and batch checks, loaders, devices, ranks.

* Arguments: :func:`check_int`, :func:`check_number`, :func:`check_fit_arguments`,
  :func:`check_schedule_length` (:class:`InputError` saying what is wrong).
* Data: :func:`check_batch` validates one ``(x, y)`` batch of a loader (``x`` float ``(N, ...)``
  inside ``bounds``, ``y`` integer labels ``(N,)``) and moves it to the device;
  :func:`check_logits` and :func:`check_budget_diameter` look at the first batch of an epoch;
  :func:`draw_guard_batch` takes the FGSM-RS guard's fixed batch without disturbing any random
  state; :func:`loader_generators` finds the generators a loader shuffles with (saved in checkpoints).
* Devices and processes: :func:`move_optimizer_state`, :func:`training_group` (the
  ``torch.distributed`` group to train over, if any).

Example::

    x, y = check_batch(batch, 0, "training", torch.device("cpu"), bounds=(0.0, 1.0))
    gens = loader_generators(DataLoader(dataset, shuffle=True, generator=torch.Generator()))
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from robustness.errors import InputError
from robustness.norms import box_diameter

if TYPE_CHECKING:
    from robustness.distributed import ProcessGroup


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` if it is an integer (not a bool) ``>= low``, else :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    """``value`` as a float if it is a finite number in the range (``low`` excluded with ``low_open``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < low or (low_open and value == low) or value > high:
        bound = f"> {low}" if low_open else f">= {low}"
        raise InputError(f"{name} must be a finite number {bound}" + (f" and <= {high}" if high < math.inf else "")
                         + f", got {value!r}")
    return float(value)


def check_fit_arguments(model: Any, train_loader: Any, *, epochs: Any, optimizer: Any, scheduler: Any,
                        scheduler_interval: Any, checkpoint: Any, resume: bool) -> None:
    """The arguments of :meth:`robustness.defenses.AdversarialTrainer.fit` that can be checked before training starts."""
    check_int("epochs", epochs, 1)
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
        if getattr(scheduler, "optimizer", optimizer) is not optimizer:
            raise InputError("the scheduler steps another optimizer than the one given to fit: build it on that "
                             "optimizer (e.g. OneCycleLR(optimizer, ...))")
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if trainable and not trainable & stepped:
        raise InputError("the optimizer holds none of the model's trainable parameters, so training would not "
                         "change the model: build it from this model's parameters (e.g. "
                         "torch.optim.SGD(model.parameters(), ...))")
    if scheduler_interval not in (None, "batch", "epoch"):
        raise InputError(f"scheduler_interval must be 'batch' or 'epoch', got {scheduler_interval!r}")
    if scheduler is not None:
        check_schedule_length(scheduler, scheduler_interval or "epoch", epochs, train_loader,
                              chosen=scheduler_interval is not None)
    if resume and checkpoint is None:
        raise InputError("resume=True needs checkpoint=PATH (the file to resume from)")
    if checkpoint is not None and Path(checkpoint).is_dir():
        raise InputError(f"checkpoint={str(checkpoint)!r} is a directory: give the path of a file in it, e.g. "
                         f"{str(Path(checkpoint) / 'run.state')!r}")
    if not isinstance(train_loader, Iterable):
        raise InputError(f"train_loader must be an iterable of (inputs, labels) batches, got "
                         f"{type(train_loader).__name__}")


#: schedulers with a set length, and the attribute that holds it
SCHEDULE_LENGTHS = {torch.optim.lr_scheduler.OneCycleLR: "total_steps",
                    torch.optim.lr_scheduler.CosineAnnealingLR: "T_max",
                    torch.optim.lr_scheduler.PolynomialLR: "total_iters"}


def check_schedule_length(scheduler: Any, interval: str, epochs: int, train_loader: Any, *, chosen: bool) -> None:
    """Refuse a schedule of set length that would fail, or whose length says the other ``interval`` was meant.

    A ``OneCycleLR`` shorter than the steps the run gives it (``epochs`` x batches per epoch per
    ``"batch"``, ``epochs`` per ``"epoch"``) would raise mid-run: always refused. When the caller
    left the interval to the default (not ``chosen``), a length of ``epochs`` x batches stepped per
    epoch would stay near its start for the whole run: refused as ambiguous (an interval given
    explicitly is trusted). Other schedulers, and loaders without a length, pass.
    """
    attr = next((a for kind, a in SCHEDULE_LENGTHS.items() if isinstance(scheduler, kind)), None)
    if attr is None:
        return
    try:
        batches = len(train_loader)
    except TypeError:  # an iterable without a length (IterableDataset): nothing to compare
        return
    name, length = type(scheduler).__name__, getattr(scheduler, attr)
    per_batch = epochs * batches
    steps, other, other_steps = (per_batch, "epoch", epochs) if interval == "batch" else (epochs, "batch", per_batch)
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and length < steps:
        how = f"{epochs} epochs x {batches} batches" if interval == "batch" else f"{epochs} epochs, once per epoch"
        hint = f", or pass scheduler_interval={other!r}" if length == other_steps else ""
        raise InputError(f"OneCycleLR's total_steps={length} is fewer than the {steps} steps this run gives it "
                         f"({how}), so it would fail at step {length + 1}: build it with total_steps={steps}{hint}")
    if not chosen and batches > 1 and length == per_batch:
        raise InputError(f"{name}'s {attr}={length} is epochs x batches per epoch ({epochs} x {batches}), a "
                         "per-batch schedule, but fit steps a scheduler once per epoch by default: pass "
                         "scheduler_interval='batch' to step it per batch (or scheduler_interval='epoch' if "
                         f"{length} epochs is meant)")


def check_batch(batch: Any, index: int, what: str, dev: torch.device, bounds: tuple[float, float], *,
                num_classes: int | None = None, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Validate one ``(x, y)`` batch (``batch`` number ``index`` of the ``what`` loader) and move it to ``dev``.

    Labels must lie in ``[0, num_classes)`` when ``num_classes`` is known; the inputs are cast to
    ``dtype`` (the model's) when given.
    """
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
        if not (bounds[0] <= lo and hi <= bounds[1]):
            raise InputError(
                f"{what} batch {index}: inputs lie in [{lo:g}, {hi:g}], outside the bounds {bounds} (or are "
                "NaN): keep inputs in pixel space and put normalization inside the model (NormalizedModel), "
                "or set bounds= to the range of your data"
            )
        low, high = (int(v) for v in torch.aminmax(y))
        if low < 0:
            raise InputError(f"{what} batch {index}: labels must be >= 0, found {low}")
        if num_classes is not None and high >= num_classes:
            raise InputError(f"{what} batch {index}: label {high} is out of range for a model with {num_classes} "
                             f"classes (labels must be 0..{num_classes - 1})")
    return x.to(dev, dtype=dtype, non_blocking=True), y.to(dev, non_blocking=True).long()


class TrainingModes:
    """The train/eval flags a model trains with.

    Training puts every submodule in training mode, except those the user left in eval mode
    inside a model that was in training mode when :meth:`~robustness.defenses.AdversarialTrainer.fit` was
    called (e.g. a BatchNorm frozen with ``.eval()``): they stay in eval mode. A model handed over
    in eval mode trains entirely in training mode.

    Example::

        modes = TrainingModes(model)      # before training
        modes.training(model)             # model.train(), frozen submodules back in eval mode
        with modes.evaluating(model):     # model.eval() for the block, then training mode again
            logits = model(x)
    """

    def __init__(self, model: nn.Module) -> None:
        self.frozen = [m for m in model.modules() if not m.training] if model.training else []

    def training(self, model: nn.Module) -> None:
        """Put ``model`` (or a wrapper around it) in training mode, the frozen submodules in eval mode."""
        model.train()
        for m in self.frozen:
            m.training = False

    @contextlib.contextmanager
    def evaluating(self, model: nn.Module) -> Iterator[None]:
        """``model`` in eval mode for the block, then back in training mode (:meth:`training`)."""
        model.eval()
        try:
            yield
        finally:
            self.training(model)


def check_budget_diameter(x: Tensor, eps: float, norm: str, bounds: tuple[float, float]) -> None:
    """An L2 or L1 ``eps`` must be smaller than the diameter of the input box of ``x``'s examples
    (Linf budgets are checked against the range when the settings are built)."""
    typical = {"l2": "0.5 to 3", "l1": "1 to 12 (12 on 3x32x32 CIFAR, 10 on MNIST)"}
    if norm in typical:
        diameter = box_diameter(norm, bounds[1] - bounds[0], x[0].numel())  # type: ignore[arg-type]
        if eps >= diameter:
            raise InputError(
                f"eps={eps} is an {norm.upper()} budget at least the diameter {diameter:.4g} of the input box "
                f"({x[0].numel()} values in {bounds}): every input could become any image. Use a smaller "
                f"budget ({norm.upper()} budgets are typically {typical[norm]} on image data in [0, 1])"
            )


def draw_guard_batch(loader: Iterable[Any], n_samples: int, bounds: tuple[float, float]) -> dict[str, Tensor]:
    """A fixed batch of ``n_samples`` training examples, drawn without disturbing any random state."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    n = 0
    gens = loader_generators(loader)
    saved = [g.get_state() for g in gens]
    with torch.random.fork_rng(devices=[]):
        for index, batch in enumerate(loader):
            x, y = check_batch(batch, index, "training", torch.device("cpu"), bounds)
            xs.append(x)
            ys.append(y)
            n += y.shape[0]
            if n >= n_samples:
                break
    for g, s in zip(gens, saved):
        g.set_state(s)
    if n == 0:
        raise InputError("the training loader yielded no examples")
    return {"x": torch.cat(xs)[:n_samples].clone(), "y": torch.cat(ys)[:n_samples].clone()}


def training_group(requested: bool | None, dev: torch.device) -> ProcessGroup | None:
    """The process group to train over, or ``None`` for single-process training."""
    if requested is False:
        return None
    import torch.distributed as dist

    if requested is None and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    from robustness.distributed import ProcessGroup

    return ProcessGroup.current(dev)


def check_logits(logits: Tensor, y: Tensor, all_labels: Tensor) -> None:
    """The model's output for ``y``'s inputs must be logits ``(N, classes)`` covering every label in ``all_labels``."""
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise InputError(f"the model must return logits of shape (N, classes); for {y.shape[0]} inputs it returned "
                         f"{tuple(logits.shape)}")
    if int(all_labels.max()) >= logits.shape[1]:
        raise InputError(f"label {int(all_labels.max())} is out of range for a model with {logits.shape[1]} classes")


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a data loader (or its sampler) owns, each once."""
    found: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move the optimizer's per-parameter tensors to ``device`` (a CPU scalar ``step`` stays where it is)."""
    for per_param in optimizer.state.values():
        for key, value in per_param.items():
            if isinstance(value, Tensor) and value.device != device and not (key == "step" and value.dim() == 0
                                                                               and value.device.type == "cpu"):
                per_param[key] = value.to(device)


@contextlib.contextmanager
def logging_to_tqdm() -> Iterator[None]:
    """Route log records through tqdm while progress bars are shown, so that they do not tear the bars."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
