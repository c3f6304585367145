"""defenses.fit_run: the state of one fit, which the training epoch and the checkpoints take."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustness.architectures import SmallCNN
from robustness.defenses.checkpointing import load_training_state, restore_training_checkpoint, save_training_checkpoint
from robustness.defenses.fit_run import FitRun
from robustness.defenses.history import TrainingHistory
from robustness.defenses.loops import train_epoch
from robustness.defenses.trainer import AdversarialTrainer
from robustness.defenses.training_utils import TrainingModes
from robustness.errors import InputError
from robustness.seeding import derive_seed

DEFENSES = Path(__file__).resolve().parents[2] / "defenses"

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _net() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, num_classes=10, input_size=8, width=4)


def _run(trainer: AdversarialTrainer, model: nn.Module, loader: DataLoader, checkpoint: Path | None) -> FitRun:
    gen = torch.Generator().manual_seed(derive_seed(trainer.seed, "train-rank", 0))  # as fit seeds rank 0
    return FitRun(trainer=trainer, model=model, train_loader=loader, val_loader=None,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.05), scheduler=None, interval="batch",
                  epochs=2, checkpoint=checkpoint, device=torch.device("cpu"), group=None,
                  modes=TrainingModes(model), progress=False, generator=gen, generators=[gen],
                  history=TrainingHistory(settings=trainer.settings()), guard=None)


def test_an_epoch_and_a_checkpoint_of_a_run_are_those_of_fit(digits, tmp_path) -> None:
    trainer = AdversarialTrainer(method="pgd", eps=0.1, steps=1, seed=2)
    loader = DataLoader(TensorDataset(digits[0][:200], digits[1][:200]), batch_size=100)
    fitted = _net()
    trainer.fit(fitted, loader, epochs=2, optimizer=torch.optim.SGD(fitted.parameters(), lr=0.05), progress=False,
                checkpoint=tmp_path / "fit.state")
    run = _run(trainer, _net(), loader, tmp_path / "run.state")
    for epoch in range(2):
        run.history.records.append(train_epoch(run, epoch))
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), fitted.state_dict().values()))
    save_training_checkpoint(run, epoch=2, finished=True)
    saved, written = load_training_state(tmp_path / "run.state"), load_training_state(tmp_path / "fit.state")
    assert saved.keys() == written.keys() and saved["epoch"] == written["epoch"] == 2
    assert saved["trainer"] == written["trainer"] and torch.equal(saved["rng"]["generators"][0],
                                                                  written["rng"]["generators"][0])

    fresh = _run(trainer, _net(), loader, tmp_path / "run.state")
    restore_training_checkpoint(fresh)
    assert fresh.done == 2 and [r.loss for r in fresh.history.records] == [r.loss for r in run.history.records]
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.state_dict().values(), fitted.state_dict().values()))


def test_a_run_without_a_checkpoint_file_cannot_save_or_restore(digits) -> None:
    model = _net()
    run = _run(AdversarialTrainer(method="standard", eps=0.1), model,
               DataLoader(TensorDataset(digits[0][:10], digits[1][:10])), None)
    assert run.lead and run.trained is model and not run.bars
    with pytest.raises(InputError, match="no checkpoint file"):
        save_training_checkpoint(run, epoch=1, finished=False)
    with pytest.raises(InputError, match="no checkpoint file"):
        restore_training_checkpoint(run)


@pytest.mark.parametrize("module", ["loops", "fit_run", "checkpointing", "training_settings", "training_utils"])
def test_what_the_trainer_calls_does_not_import_the_trainer(module) -> None:
    """No import cycle back to defenses.trainer, not even one for type hints only."""
    tree = ast.parse((DEFENSES / f"{module}.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "robustness.defenses.trainer" not in imported and "robustness.defenses" not in imported
