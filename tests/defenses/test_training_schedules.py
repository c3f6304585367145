"""When AdversarialTrainer.fit steps a learning-rate scheduler: once per epoch by default (PyTorch's
convention), per batch when asked; a schedule built for the other interval is refused, and so is a
resume that would change the interval (an old checkpoint without one counts as per batch)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from robustness.architectures import SmallCNN
from robustness.defenses import AdversarialTrainer
from robustness.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

LR = 0.1


def _net() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, num_classes=10, input_size=8, width=4)


class _RecordingLoader:
    """Three batches of four digits; records the optimizer's learning rate as each batch is drawn
    (the rate that batch's step uses), one list per pass."""

    def __init__(self, digits, optimizer: torch.optim.Optimizer) -> None:
        self.batches = [(digits[0][i * 4:(i + 1) * 4], digits[1][i * 4:(i + 1) * 4]) for i in range(3)]
        self.optimizer, self.lrs = optimizer, []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.lrs.append([])
        for batch in self.batches:
            self.lrs[-1].append(self.optimizer.param_groups[0]["lr"])
            yield batch


def _fit(model: nn.Module, loader, opt, sched, epochs: int, **kw) -> object:
    trainer = AdversarialTrainer(method="standard", eps=0.1, seed=0)
    return trainer.fit(model, loader, epochs=epochs, optimizer=opt, scheduler=sched, progress=False, **kw)


def test_a_milestone_schedule_steps_at_epoch_boundaries_by_default(digits) -> None:
    """MultiStepLR(milestones=[5, 8]) counts epochs: the rate holds for all of epochs 1-5, not 5 batches."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 8], gamma=0.1)
    loader = _RecordingLoader(digits, opt)
    history = _fit(model, loader, opt, sched, epochs=10)
    expected = [LR] * 5 + [LR / 10] * 3 + [LR / 100] * 2
    assert loader.lrs == [[pytest.approx(lr)] * 3 for lr in expected]
    assert [r.lr for r in history.records] == [pytest.approx(lr) for lr in expected]
    # per batch only when asked: the same schedule then drops inside the second epoch
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = _RecordingLoader(digits, opt)
    _fit(model, loader, opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 8], gamma=0.1), epochs=3,
         scheduler_interval="batch")
    assert loader.lrs == [[pytest.approx(v) for v in row] for row in
                          ([LR] * 3, [LR, LR, LR / 10], [LR / 10, LR / 10, LR / 100])]


def _one_cycle(total: int):
    return lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=total)


@pytest.mark.parametrize(("build", "interval", "named"), [
    (_one_cycle(4 * 3), None, "total_steps=12 is epochs x batches per epoch .4 x 3.*pass scheduler_interval='batch'"),
    (lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4 * 3), None,
     "T_max=12 is epochs x batches.*or scheduler_interval='epoch' if 12 epochs is meant"),
    (_one_cycle(4), "batch", "total_steps=4 is fewer than the 12 steps this run gives it .4 epochs x 3 batches., "
     "so it would fail at step 5: build it with total_steps=12, or pass scheduler_interval='epoch'"),
    (_one_cycle(3), "epoch", "total_steps=3 is fewer than the 4 steps.*4 epochs, once per epoch"),
])
def test_a_schedule_that_would_fail_or_is_ambiguous_is_refused_before_training(digits, build, interval,
                                                                               named) -> None:
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = _RecordingLoader(digits, opt)
    with pytest.raises(InputError, match=named):
        _fit(model, loader, opt, build(opt), epochs=4, scheduler_interval=interval)
    assert loader.lrs == [] and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_interval_given_explicitly_is_trusted(digits) -> None:
    """T_max=4 for 2 epochs of 2 batches may well mean 4 epochs (the first part of a longer plan)."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = _RecordingLoader(digits, opt)
    loader.batches = loader.batches[:2]
    _fit(model, loader, opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4), epochs=2,
         scheduler_interval="epoch")
    assert [row[0] for row in loader.lrs] == [pytest.approx(LR), pytest.approx(LR * (1 + math.cos(math.pi / 4)) / 2)]


def _first_epoch(digits, path, *, scheduled: bool, interval: str) -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3) if scheduled else None
    _fit(model, _RecordingLoader(digits, opt), opt, sched, epochs=1, scheduler_interval=interval, checkpoint=path)


def _resume(digits, path, *, scheduled: bool, **kw) -> list[list[float]]:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3) if scheduled else None
    loader = _RecordingLoader(digits, opt)
    _fit(model, loader, opt, sched, epochs=2, checkpoint=path, resume=True, **kw)
    return loader.lrs


def test_a_resume_with_another_interval_is_refused_and_an_old_checkpoint_counts_as_per_batch(digits, tmp_path) -> None:
    path = tmp_path / "run.state"
    _first_epoch(digits, path, scheduled=True, interval="batch")
    with pytest.raises(InputError, match="stepped its scheduler per batch, this run per epoch: resume with "
                                         "scheduler_interval='batch'"):
        _resume(digits, path, scheduled=True)
    # a checkpoint from before the interval was recorded stepped per batch (the default then)
    state = torch.load(path, weights_only=True)
    del state["scheduler_interval"]
    torch.save(state, path)
    with pytest.raises(InputError, match="stepped its scheduler per batch, this run per epoch"):
        _resume(digits, path, scheduled=True)
    assert _resume(digits, path, scheduled=True, scheduler_interval="batch") == [[pytest.approx(LR / 10)] * 3]
    # without a scheduler the interval changes nothing: a run saved under the old default resumes
    _first_epoch(digits, path, scheduled=False, interval="batch")
    assert _resume(digits, path, scheduled=False) == [[LR] * 3]
