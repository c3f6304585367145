"""What AdversarialTrainer.fit refuses, and what it respects, in a user's objects: a resume with
other optimizer or schedule settings, labels out of range in any batch, an optimizer or scheduler
that belongs to something else, submodules the user froze in eval mode, float64 models, and a
budget warm-up longer than the run."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustness.defenses import AdversarialTrainer
from robustness.architectures import SmallCNN
from robustness.errors import InputError, RobustnessWarning


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, num_classes=10, input_size=8, width=4)


def _loader(digits, n: int = 128) -> DataLoader:
    return DataLoader(TensorDataset(digits[0][:n], digits[1][:n]), batch_size=64, shuffle=False)


def _trainer(**kw) -> AdversarialTrainer:
    return AdversarialTrainer(method="fgsm-rs", eps=0.1, seed=0, guard=False, **kw)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _first_run(digits, path, *, lr: float = 0.05, weight_decay: float = 5e-4, t_max: int = 4) -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
    _trainer().fit(model, _loader(digits), epochs=1, optimizer=opt, scheduler=sched, scheduler_interval="epoch",
                   checkpoint=path, progress=False)


@pytest.mark.parametrize(("change", "named"), [
    ({"lr": 0.5}, "initial_lr=0.05 there, 0.5 here"),
    ({"weight_decay": 0.0}, "weight_decay=0.0005 there, 0.0 here"),
    ({"t_max": 8}, "T_max=4 there, 8 here"),
])
def test_a_resume_with_other_optimizer_or_schedule_settings_is_refused(digits, tmp_path, change, named) -> None:
    """torch's load_state_dict would silently put the old settings back (an lr of 0.5 trained at 0.05, a
    cosine schedule built for 4 epochs ran into 0 and back up): refuse, naming the setting."""
    path = tmp_path / "run.state"
    _first_run(digits, path)
    settings = {"lr": 0.05, "weight_decay": 5e-4, "t_max": 4, **change}
    model = _net(seed=1)
    before = _state(model)
    opt = torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=0.9, weight_decay=settings["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings["t_max"])
    with pytest.raises(InputError, match="other optimizer or learning-rate schedule settings") as info:
        _trainer().fit(model, _loader(digits), epochs=3, optimizer=opt, scheduler=sched, scheduler_interval="epoch",
                       checkpoint=path, resume=True, progress=False)
    assert named in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded


def test_the_same_settings_resume_and_a_refused_optimizer_leaves_the_model_alone(digits, tmp_path) -> None:
    path = tmp_path / "run.state"
    _first_run(digits, path)
    model = _net(seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    history = _trainer().fit(model, _loader(digits), epochs=2, optimizer=opt, scheduler=sched,
                             scheduler_interval="epoch", checkpoint=path, resume=True, progress=False)
    assert [r.epoch for r in history.records] == [1, 2]
    # an optimizer with two parameter groups does not fit the saved one: refused before loading the weights
    other = _net(seed=2)
    before = _state(other)
    params = list(other.parameters())
    two_groups = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.05, momentum=0.9,
                                 weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(two_groups, T_max=4)
    with pytest.raises(InputError, match="1 parameter group.s. there, 2 here"):
        _trainer().fit(other, _loader(digits), epochs=3, optimizer=two_groups, scheduler=sched,
                       scheduler_interval="epoch", checkpoint=path, resume=True, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())


@pytest.mark.parametrize("where", ["train", "val"])
def test_labels_out_of_range_in_a_later_batch_are_refused(digits, where) -> None:
    x, y = digits[0][:128], digits[1][:128].clone()
    y[100] = 12  # in the second batch
    bad = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    train, val = (bad, None) if where == "train" else (_loader(digits), bad)
    with pytest.raises(InputError, match="batch 1: label 12 is out of range for a model with 10 classes"):
        _trainer().fit(model, train, epochs=1, optimizer=opt, val_loader=val, progress=False)


def test_an_optimizer_or_scheduler_of_something_else_is_refused(digits) -> None:
    model = _net()
    with pytest.raises(InputError, match="optimizer holds none of the model's trainable parameters"):
        _trainer().fit(model, _loader(digits), epochs=1, optimizer=torch.optim.SGD(_net().parameters(), lr=0.1),
                       progress=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    foreign = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(_net().parameters(), lr=0.1), step_size=1)
    with pytest.raises(InputError, match="scheduler steps another optimizer"):
        _trainer().fit(model, _loader(digits), epochs=1, optimizer=opt, scheduler=foreign, progress=False)
    # fine-tuning part of a model (the head only) is allowed
    head = [p for n, p in model.named_parameters() if n.startswith(list(dict(model.named_children()))[-1])]
    before = _state(model)
    _trainer().fit(model, _loader(digits), epochs=1, optimizer=torch.optim.SGD(head, lr=0.1), progress=False)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_submodule_frozen_in_eval_mode_stays_frozen(digits) -> None:
    """A BatchNorm the user put in eval mode (frozen statistics) inside a model in training mode
    keeps its running statistics; every flag comes back as it was."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
    model.train()
    model[1].eval()
    stats = (model[1].running_mean.clone(), model[1].running_var.clone())
    _trainer().fit(model, _loader(digits), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                   progress=False)
    assert torch.equal(model[1].running_mean, stats[0]) and torch.equal(model[1].running_var, stats[1])
    assert model.training and not model[1].training
    # a model handed over in eval mode trains entirely in training mode (statistics move), then comes back in eval
    model.eval()
    _trainer().fit(model, _loader(digits), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                   progress=False)
    assert not torch.equal(model[1].running_mean, stats[0]) and not any(m.training for m in model.modules())


def test_a_float64_model_trains_and_validates_on_float32_data(digits) -> None:
    model = _net().double()
    history = _trainer().fit(model, _loader(digits), epochs=1, val_loader=_loader(digits, 64),
                             optimizer=torch.optim.SGD(model.parameters(), lr=0.05), progress=False)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert history.records[0].val_clean_accuracy is not None and 0 <= history.records[0].val_clean_accuracy <= 1


def test_a_warm_up_longer_than_the_run_warns(digits) -> None:
    model = _net()
    with pytest.warns(RobustnessWarning, match="without reaching it"):
        AdversarialTrainer(method="fgsm-rs", eps=0.1, seed=0, guard=False, eps_warmup_epochs=3).fit(
            model, _loader(digits), epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), progress=False)


def test_a_checkpoint_path_that_is_a_directory_is_refused_before_training(digits, tmp_path) -> None:
    model = _net()
    before = _state(model)
    with pytest.raises(InputError, match="is a directory: give the path of a file in it"):
        _trainer().fit(model, _loader(digits), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                       checkpoint=tmp_path, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_json_history_log_is_standard_json_and_reads_back(digits, tmp_path) -> None:
    import json
    import math

    from robustness.defenses.history import TrainingHistory

    model = _net()
    path = tmp_path / "run.state"
    _trainer().fit(model, _loader(digits), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                   checkpoint=path, progress=False)
    log = json.loads((tmp_path / "run.history.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    log["records"][0]["loss"] = None  # how the log writes a NaN
    history = TrainingHistory.from_dict(log)
    assert math.isnan(history.records[0].loss) and "nan" in history.table()
