"""defenses: adversarial training methods, warm-up, the FGSM-RS guard, checkpoints, resume, bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robustness.defenses import checkpointing
from robustness.defenses.checkpointing import history_log_path, load_training_state
from robustness.defenses.guard import OverfitGuard, collapse_reason
from robustness.defenses.methods import fgsm_rs_examples, pgd_examples, trades_examples
from robustness.defenses.trainer import AdversarialTrainer, TrainingHistory
from robustness.architectures import SmallCNN
from robustness.errors import InputError
from robustness.loading import save_checkpoint
from robustness.norms import norm_of
from tests.damage import KINDS, damage_file

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _net(width: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, num_classes=10, input_size=8, width=width)


def _loader(digits, n: int = 1400, batch_size: int = 100, shuffle: bool = True, **kw: Any) -> DataLoader:
    x, y = digits[0][:n], digits[1][:n]
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, **kw)


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train(method: str, digits, *, eps: float = 0.15, epochs: int = 6, **kw: Any) -> tuple[nn.Module, TrainingHistory]:
    model = _net()
    trainer = AdversarialTrainer(method=method, eps=eps, steps=3, seed=0, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(1)
    history = trainer.fit(model, _loader(digits), epochs=epochs, optimizer=opt, progress=False)
    return model, history


# ----------------------------------------------------------------------------- settings


def test_settings_are_validated_frozen_and_have_paper_defaults() -> None:
    pgd = AdversarialTrainer(method="PGD", eps=0.1, steps=10)
    assert pgd.method == "pgd" and pgd.step_fraction == pytest.approx(0.25)
    assert AdversarialTrainer(method="fgsm-rs", eps=0.1).step_fraction == pytest.approx(1.25)
    assert AdversarialTrainer(method="trades", eps=0.1, steps=5).step_fraction == pytest.approx(0.5)
    assert AdversarialTrainer(method="trades", eps=0.1).beta == 6.0
    assert AdversarialTrainer(method="pgd", eps=0.1, step_size=0.1).step_fraction == pytest.approx(0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pgd.eps = 0.3  # type: ignore[misc]
    with pytest.raises(InputError, match="unknown training method 'madry'.*pgd, fgsm-rs, trades"):
        AdversarialTrainer(method="madry", eps=0.1)
    with pytest.raises(InputError, match="unknown norm"):
        AdversarialTrainer(method="pgd", eps=0.1, norm="l0")
    with pytest.raises(InputError, match=r"whole input range.*8/255"):
        AdversarialTrainer(method="pgd", eps=8, norm="linf")
    for bad in ({"eps": -0.1}, {"eps": float("nan")}, {"eps": 0.1, "steps": 0}, {"eps": 0.1, "beta": -1},
                {"eps": 0.1, "eps_warmup_epochs": -1}, {"eps": 0.1, "bounds": (1, 0)}, {"eps": 0.1, "step_size": 0},
                {"eps": 0.1, "guard_drop": 0}):
        with pytest.raises(InputError):
            AdversarialTrainer(method="pgd", **bad)


@pytest.mark.parametrize(("norm", "eps", "diameter"), [("l2", 9.0, "8"), ("l1", 64.0, "64")])
def test_budget_larger_than_the_box_is_refused(norm, eps, diameter, digits) -> None:
    trainer = AdversarialTrainer(method="pgd", eps=eps, norm=norm, steps=1)  # 8x8 box in [0, 1]
    net = _net(4)
    with pytest.raises(InputError, match=f"{norm.upper()} budget at least the diameter {diameter} "):
        trainer.fit(net, _loader(digits, 100), epochs=1, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                    progress=False)


def test_eps_warmup_ramps_linearly_then_holds(digits, monkeypatch) -> None:
    trainer = AdversarialTrainer(method="pgd", eps=0.2, steps=1, eps_warmup_epochs=3)
    assert [trainer.eps_at(e) for e in range(5)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2])
    seen: list[tuple[float, float]] = []
    import robustness.defenses.loops as loops_module  # where the training epoch looks training_loss up

    real = loops_module.training_loss

    def spy(method, model, x, y, **kw):
        seen.append((kw["eps"], kw["alpha"]))
        return real(method, model, x, y, **kw)

    monkeypatch.setattr(loops_module, "training_loss", spy)
    model = _net(4)
    history = trainer.fit(model, _loader(digits, 200, batch_size=100), epochs=5,
                          optimizer=torch.optim.SGD(model.parameters(), lr=0.05), progress=False)
    assert [r.eps for r in history.records] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2])
    eps_per_batch = [e for e, _ in seen]
    assert eps_per_batch == pytest.approx([0.05] * 2 + [0.1] * 2 + [0.15] * 2 + [0.2] * 4)
    # the step is relative to the current budget (PGD-1 default: 2.5 * eps)
    assert all(a == pytest.approx(2.5 * e) for e, a in seen)


# ----------------------------------------------------------------------------- the inner maximisation


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0), ("l1", 2.0)])
def test_inner_attacks_stay_in_budget_and_bounds_and_raise_the_loss(norm, eps, standard_run, digits) -> None:
    trained_model = standard_run[0].eval()
    x, y = digits[2][:128], digits[3][:128]
    gen = torch.Generator().manual_seed(0)
    common = {"eps": eps, "norm": norm, "bounds": (0.0, 1.0), "generator": gen}
    with torch.no_grad():
        probs = torch.softmax(trained_model(x), dim=1)
    outs = {
        "pgd": pgd_examples(trained_model, x, y, steps=5, alpha=eps / 2, **common),
        "fgsm-rs": fgsm_rs_examples(trained_model, x, y, alpha=1.25 * eps, **common),
        "trades": trades_examples(trained_model, x, probs, steps=5, alpha=eps / 2, **common),
    }
    with torch.no_grad():
        clean_loss = nn.functional.cross_entropy(trained_model(x), y)
        for name, adv in outs.items():
            assert adv.shape == x.shape and not adv.requires_grad
            assert float(norm_of(adv - x, norm).max()) <= eps + 1e-5, name
            assert float(adv.min()) >= 0 and float(adv.max()) <= 1, name
            assert float(nn.functional.cross_entropy(trained_model(adv), y)) > float(clean_loss), name


# ----------------------------------------------------------------------------- training works


@pytest.fixture(scope="module")
def standard_run(digits) -> tuple[nn.Module, TrainingHistory]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train("standard", digits)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["pgd", "fgsm-rs", "trades"])
def test_each_method_is_more_robust_than_standard_training(method, digits, standard_run) -> None:
    x_test, y_test = digits[2][:200], digits[3][:200]
    loader = [(x_test, y_test)]
    judge = AdversarialTrainer(method="pgd", eps=0.15, eval_steps=10, seed=123)
    standard = judge.evaluate(standard_run[0], loader)
    model, history = _train(method, digits)
    ours = judge.evaluate(model, loader)
    assert standard.clean_accuracy > 0.9
    assert ours.clean_accuracy > 0.9, ours
    assert ours.robust_accuracy > standard.robust_accuracy + 0.3, (method, ours, standard)
    assert len(history.records) == 6 and not history.stopped_early
    last = history.final
    assert last.train_adversarial_accuracy is not None and last.loss < history.records[0].loss
    assert (last.train_clean_accuracy is not None) == (method == "trades")


def test_l1_training_is_more_robust_in_l1_than_standard_training(digits, standard_run) -> None:
    x_test, y_test = digits[2][:200], digits[3][:200]
    judge = AdversarialTrainer(method="pgd", eps=1.5, norm="l1", eval_steps=10, seed=123)
    standard = judge.evaluate(standard_run[0], [(x_test, y_test)])
    model, history = _train("pgd", digits, eps=1.5, norm="l1", epochs=4)
    ours = judge.evaluate(model, [(x_test, y_test)])
    assert ours.norm == "l1" and ours.clean_accuracy > 0.85, ours
    assert ours.robust_accuracy > standard.robust_accuracy + 0.25, (ours, standard)  # measured 0.70 vs 0.32


def test_l2_training_and_validation_records(digits) -> None:
    model = _net(4)
    trainer = AdversarialTrainer(method="pgd", eps=1.0, norm="l2", steps=2, eval_steps=3, eval_samples=50,
                                 track_clean=True)
    val = _loader(digits, 80, shuffle=False)
    history = trainer.fit(model, _loader(digits, 200), epochs=2, optimizer=torch.optim.Adam(model.parameters(), 1e-2),
                          val_loader=val, progress=False)
    for r in history.records:
        assert r.eps == 1.0 and r.train_clean_accuracy is not None and r.seconds > 0
        assert 0 <= r.val_robust_accuracy <= r.val_clean_accuracy <= 1  # type: ignore[operator]


def test_model_keeps_its_modes_and_the_trainer_keeps_no_state(digits) -> None:
    model = _net(4)
    model.eval()
    model.features[1].train()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    trainer = AdversarialTrainer(method="trades", eps=0.1, steps=1)
    trainer.fit(model, _loader(digits, 100), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                progress=False)
    assert [m.training for m in model.modules()] == before
    state = torch.get_rng_state()
    trainer.evaluate(model, _loader(digits, 100))  # a shuffling loader must not move the global RNG
    assert torch.equal(state, torch.get_rng_state())
    assert [m.training for m in model.modules()] == before


# ----------------------------------------------------------------------------- the FGSM-RS guard


def test_collapse_rules_on_fake_accuracy_sequences() -> None:
    assert collapse_reason(None, 0.0, 0.99, drop=0.2) is None  # nothing to compare with yet
    assert collapse_reason(0.5, 0.35, 0.6, drop=0.2) is None
    assert "fell from 50.0%" in collapse_reason(0.5, 0.29, 0.6, drop=0.2)
    assert "catastrophic" in collapse_reason(0.1, 0.01, 0.9, drop=0.2)  # small best, but the FGSM signature
    assert collapse_reason(0.1, 0.01, 0.3, drop=0.2) is None  # low everywhere: still learning
    guard = OverfitGuard(drop=0.2)
    net = nn.Linear(2, 2)
    weights = []
    for epoch, (pgd, fgsm) in enumerate([(0.3, 0.4), (0.45, 0.5), (0.4, 0.6), (0.02, 0.95)], start=1):
        with torch.no_grad():
            net.weight.fill_(epoch)
        weights.append(net.weight.clone())
        reason = guard.check(epoch, pgd_acc=pgd, fgsm_acc=fgsm, model=net)
        assert (reason is None) == (epoch < 4)
    assert guard.best == 0.45 and guard.best_epoch == 2 and guard.last_good_epoch == 3
    assert guard.restore(net) == 3 and torch.equal(net.weight, weights[2])


def test_guard_restores_the_last_good_weights_and_stops(digits, monkeypatch, tmp_path) -> None:
    """Fake the guard's PGD accuracy: 0.5, 0.6, then a collapse to 0.05 in epoch 3."""
    def run(epochs: int, checkpoint: Path | None = None) -> tuple[nn.Module, TrainingHistory]:
        model = _net(4)
        trainer = AdversarialTrainer(method="fgsm-rs", eps=0.1, guard_samples=64)
        torch.manual_seed(7)
        history = trainer.fit(model, _loader(digits, 200), epochs=epochs, checkpoint=checkpoint,
                              optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), progress=False)
        return model, history

    two_epochs, _ = run(2)
    fake = iter([0.5, 0.6, 0.05, 0.7, 0.7])
    real_evaluate = AdversarialTrainer.evaluate

    def evaluate(self, model, loader, **kw):
        result = real_evaluate(self, model, loader, **kw)
        return dataclasses.replace(result, robust_accuracy=next(fake))

    monkeypatch.setattr(AdversarialTrainer, "evaluate", evaluate)
    ckpt = tmp_path / "g.state"
    model, history = run(5, ckpt)
    assert history.stopped_early and history.restored_epoch == 2 and "fell from 60.0%" in history.stop_reason
    assert [r.guard_accuracy for r in history.records] == [0.5, 0.6, 0.05]
    assert _states_equal(model.state_dict(), two_epochs.state_dict())
    state = load_training_state(ckpt)
    assert state["finished"] and state["epoch"] == 3 and _states_equal(state["model"], model.state_dict())
    # resuming a stopped run trains nothing more
    resumed_model = _net(4)
    again = AdversarialTrainer(method="fgsm-rs", eps=0.1, guard_samples=64).fit(
        resumed_model, _loader(digits, 200), epochs=5, checkpoint=ckpt, resume=True,
        optimizer=torch.optim.SGD(resumed_model.parameters(), lr=0.05, momentum=0.9), progress=False)
    assert again.stopped_early and len(again.records) == 3
    assert _states_equal(resumed_model.state_dict(), two_epochs.state_dict())


# ----------------------------------------------------------------------------- bad input


class _NotAClassifier(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).view(x.shape[0], 4, -1)


@pytest.mark.parametrize(
    "batch, message",
    [
        ((torch.rand(4, 1, 8, 8), torch.tensor([0.0, 1.0, 2.0, 3.0])), "dtype torch.float32.*y.long()"),
        ((torch.rand(4, 1, 8, 8), torch.zeros(4, 10, dtype=torch.long)), r"shape \(4, 10\).*expected \(4,\)"),
        ((torch.rand(4), torch.zeros(4, dtype=torch.long)), r"shape \(N, C, H, W\)"),
        ((torch.randint(0, 255, (4, 1, 8, 8)), torch.zeros(4, dtype=torch.long)), "floating-point"),
        ((torch.rand(4, 1, 8, 8) * 255, torch.zeros(4, dtype=torch.long)), "outside the bounds.*NormalizedModel"),
        ((torch.rand(4, 1, 8, 8), torch.full((4,), 12)), "label 12 is out of range"),
        ({"x": torch.rand(4, 1, 8, 8)}, r"\(inputs, labels\) pairs"),
    ],
)
def test_bad_batches_raise_input_error(batch, message) -> None:
    model = _net(4)
    trainer = AdversarialTrainer(method="pgd", eps=0.1, steps=1)
    with pytest.raises(InputError, match=message):
        trainer.fit(model, [batch], epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)


def test_bad_fit_arguments() -> None:
    model = _net(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = AdversarialTrainer(method="pgd", eps=0.1)
    batches = [(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(InputError, match="epochs"):
        trainer.fit(model, batches, epochs=0, optimizer=opt)
    with pytest.raises(InputError, match="resume=True needs checkpoint"):
        trainer.fit(model, batches, epochs=1, optimizer=opt, resume=True)
    with pytest.raises(InputError, match="optimizer"):
        trainer.fit(model, batches, epochs=1, optimizer="sgd")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="logits of shape"):
        trainer.fit(_NotAClassifier(), batches, epochs=1, optimizer=opt, progress=False)
    with pytest.raises(InputError, match="no examples"):
        trainer.fit(model, [], epochs=1, optimizer=opt, progress=False)


# ----------------------------------------------------------------------------- checkpoints


class _NoisyDigits(Dataset):
    """Digits plus noise drawn from NumPy's and Python's global generators (a user's augmentation)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        jitter = float(np.random.uniform(0, 0.02)) + random.uniform(0, 0.02)
        return (self.x[i] * (1 - jitter)).clamp(0, 1), int(self.y[i])


def _resumable_run(digits, tmp_path: Path, epochs: int, *, resume: bool, total: int = 3,
                   fresh_seed: bool = True) -> tuple[nn.Module, TrainingHistory]:
    if fresh_seed:
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
    model = _net(4)
    gen = torch.Generator().manual_seed(5)
    loader = DataLoader(_NoisyDigits(digits[0][:192], digits[1][:192]), batch_size=64, shuffle=True, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=total * len(loader))
    trainer = AdversarialTrainer(method="pgd", eps=0.1, steps=2, seed=3)
    history = trainer.fit(model, loader, epochs=epochs, optimizer=opt, scheduler=sched, scheduler_interval="batch",
                          checkpoint=tmp_path / "run.state", resume=resume, progress=False)
    return model, history


def test_checkpoint_is_weights_only_and_resume_in_process_is_exact(digits, tmp_path) -> None:
    """1 epoch, then resume to 3, equals 3 straight epochs: model, optimizer, scheduler, the
    loader's own generator, NumPy's and Python's RNG all come back."""
    straight, _ = _resumable_run(digits, tmp_path / "a", 3, resume=False)
    _resumable_run(digits, tmp_path / "b", 1, resume=False)
    state = torch.load(tmp_path / "b" / "run.state", weights_only=True)
    assert state["epoch"] == 1 and state["finished"] is True and state["trainer"]["method"] == "pgd"
    assert {"torch", "numpy", "python", "generators"} <= set(state["rng"]) and len(state["rng"]["generators"]) == 2
    assert history_log_path(tmp_path / "b" / "run.state").name == "run.history.json"
    assert (tmp_path / "b" / "run.history.json").read_text().count('"epoch"') == 1
    # scramble every random state before resuming: the checkpoint must put them all back
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    resumed, history = _resumable_run(digits, tmp_path / "b", 3, resume=True, fresh_seed=False)
    assert [r.epoch for r in history.records] == [1, 2, 3]
    assert _states_equal(straight.state_dict(), resumed.state_dict())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "model-file"])
def test_corrupt_or_foreign_checkpoint_is_an_error_never_a_fresh_start(damage, digits, tmp_path) -> None:
    _resumable_run(digits, tmp_path, 1, resume=False, total=2)
    path = tmp_path / "run.state"
    if damage in KINDS:
        damage_file(path, damage)
    else:
        save_checkpoint(path, _net(4), arch="small-cnn", arch_kwargs={"width": 4})
    before = path.read_bytes()
    with pytest.raises(InputError, match="corrupt or truncated|not a training checkpoint") as info:
        _resumable_run(digits, tmp_path, 2, resume=True, total=2)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before  # left for the user to inspect, not overwritten


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(digits, tmp_path, monkeypatch) -> None:
    _resumable_run(digits, tmp_path, 1, resume=False)
    path = tmp_path / "run.state"
    good = path.read_bytes()
    real_open = checkpointing.atomic_open

    class FullDisk:
        """A file that accepts 1,000 bytes, then fails like a full disk."""

        def __init__(self, handle: Any) -> None:
            self.handle, self.written = handle, 0

        def write(self, data: bytes) -> int:
            room = 1000 - self.written
            if len(data) > room:
                self.handle.write(bytes(data)[:room])  # half the file reaches the disk, then it is full
                raise OSError(28, "No space left on device")
            self.written += len(data)
            return self.handle.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

    @contextlib.contextmanager
    def full_disk_open(target, mode="wb"):
        with real_open(target, mode) as handle:
            yield FullDisk(handle)

    monkeypatch.setattr(checkpointing, "atomic_open", full_disk_open)
    with pytest.raises(InputError, match="No space left on device; the previous checkpoint is intact"):
        _resumable_run(digits, tmp_path, 3, resume=True)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.setattr(checkpointing, "atomic_open", real_open)
    _, history = _resumable_run(digits, tmp_path, 3, resume=True)  # and training goes on from it
    assert len(history.records) == 3


def test_checkpoint_of_another_architecture_or_settings_is_refused(digits, tmp_path) -> None:
    _resumable_run(digits, tmp_path, 1, resume=False)
    path = tmp_path / "run.state"
    other = _net(width=8)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    trainer = AdversarialTrainer(method="pgd", eps=0.1, steps=2, seed=3)
    loader = _loader(digits, 64)
    opt = torch.optim.SGD(other.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=10)
    with pytest.raises(InputError, match="different model architecture.*wrong shapes"):
        trainer.fit(other, loader, epochs=2, optimizer=opt, scheduler=sched, scheduler_interval="batch",
                    checkpoint=path, resume=True, progress=False)
    assert _states_equal(before, other.state_dict())  # nothing half-loaded
    model = _net(4)
    with pytest.raises(InputError, match="different trainer settings.*eps=0.1 there, 0.2 here"):
        AdversarialTrainer(method="pgd", eps=0.2, steps=2, seed=3).fit(
            model, loader, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), checkpoint=path,
            resume=True, progress=False)


def test_resume_without_a_checkpoint_starts_fresh_and_says_so(digits, tmp_path, caplog) -> None:
    with caplog.at_level("WARNING", logger="robustness.defenses.trainer"):
        _, history = _resumable_run(digits, tmp_path, 1, resume=True, total=1)
    assert "no training checkpoint" in caplog.text and len(history.records) == 1


@pytest.mark.gpu
def test_training_on_cuda_leaves_model_and_optimizer_where_they_were(digits, tmp_path) -> None:
    model = _net(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = AdversarialTrainer(method="trades", eps=0.1, steps=2)
    history = trainer.fit(model, _loader(digits, 200), epochs=1, optimizer=opt, device="cuda",
                          val_loader=_loader(digits, 64, shuffle=False), checkpoint=tmp_path / "c.state",
                          progress=False)
    assert len(history.records) == 1 and history.final.val_clean_accuracy is not None
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(v.device.type == "cpu" for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    state = torch.load(tmp_path / "c.state", weights_only=True)
    assert state["rng"]["cuda"] and state["rng"]["generators"]
    again = trainer.fit(model, _loader(digits, 200), epochs=2, optimizer=opt, device="cuda",
                        checkpoint=tmp_path / "c.state", resume=True, progress=False)
    assert [r.epoch for r in again.records] == [1, 2]
