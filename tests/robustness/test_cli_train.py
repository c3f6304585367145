"""`robustness train`: a thin adapter over AdversarialTrainer whose output `evaluate` reads; bad input exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import robustness.defenses.trainer as trainer_module
from robustness.defenses.trainer import AdversarialTrainer, EvalResult, TrainingHistory
from robustness import cli
from robustness.loading import load_model

TINY = ["--arch-kwargs", "width=4", "--steps", "1", "--epochs", "2", "--n", "256", "--batch-size", "128",
        "--eval-steps", "2", "--eval-samples", "64", "--threads", "1", "--quiet"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread is fastest, above all on a busy machine


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def test_train_writes_a_model_that_evaluate_reads_without_arch(tmp_path, capsys) -> None:
    out = tmp_path / "model.pt"
    argv = ["train", "--method", "fgsm-rs", "--eps", "0.1", "--seed", "3", "--out", str(out), *TINY]
    assert cli.main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("fgsm-rs: test clean") and str(out) in line and len(line.splitlines()) == 1
    loaded = load_model(str(out))
    assert loaded.arch == "small-cnn" and loaded.dataset == "digits" and loaded.mean is not None
    meta = loaded.meta
    assert meta["command"] == "robustness " + " ".join(argv)
    assert (meta["method"], meta["eps"], meta["epochs"], meta["seed"], meta["norm"]) == ("fgsm-rs", 0.1, 2, 3, "linf")
    assert 0 <= meta["test_robust_accuracy"] <= meta["test_clean_accuracy"] <= 1
    state = torch.load(tmp_path / "model.pt.state", weights_only=True)
    assert state["epoch"] == 2 and state["trainer"]["method"] == "fgsm-rs" and state["trainer"]["seed"] == 3
    assert len(json.loads((tmp_path / "model.pt.history.json").read_text())["records"]) == 2
    report = tmp_path / "rep"
    assert cli.main(["evaluate", "--model", str(out), "--n", "40", "--eps", "0,0.1", "--attacks", "fgsm",
                     "--out", str(report), "--quiet"]) == 0
    assert json.loads((report / "report.json").read_text())["n_examples"] == 40


def test_train_norm_l1_uses_the_l1_budget_and_records_it(tmp_path, capsys) -> None:
    out = tmp_path / "model.pt"
    assert cli.main(["train", "--norm", "l1", "--out", str(out), *TINY, "--arch-kwargs", "width=8", "--epochs", "4",
                     "--n", "700", "--batch-size", "64"]) == 0
    meta = load_model(str(out)).meta
    assert (meta["norm"], meta["eps"]) == ("l1", 2.0)  # digits' default L1 training budget
    assert meta["robust_attack"].startswith("PGD-2 l1 eps=2")
    assert 0 <= meta["test_robust_accuracy"] < meta["test_clean_accuracy"] <= 1  # an L1 budget of 2 bites


def test_resume_of_a_finished_run_trains_nothing_and_writes_the_same_model(tmp_path, capsys) -> None:
    out = tmp_path / "m.pt"
    argv = ["train", "--method", "trades", "--out", str(out), *TINY]
    assert cli.main(argv) == 0
    loaded = load_model(str(out))
    first, first_seconds = loaded.model.state_dict(), loaded.meta["train_seconds"]
    assert cli.main([*argv, "--resume"]) == 0
    second = load_model(str(out))
    assert all(torch.equal(first[k], v) for k, v in second.model.state_dict().items())
    assert second.meta["epochs_completed"] == 2
    assert second.meta["train_seconds"] == first_seconds > 0  # the epochs' time, not the resume's 0 s
    # more epochs would stretch the learning-rate schedule mid-run: a clear error, no traceback
    longer = [a if a != "2" or argv[i - 1] != "--epochs" else "3" for i, a in enumerate(argv)]
    assert longer != argv
    capsys.readouterr()
    assert cli.main([*longer, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "total_steps=" in err and "resume with epochs=2" in err and "CLI: --epochs 2" in err


def _run_files(out) -> dict[str, bytes]:
    """The bytes of a run's model, training state and history (what a replacement would change)."""
    return {p.name: p.read_bytes() for p in (out, out.with_name(out.name + ".state"),
                                            out.with_name(out.name + ".history.json")) if p.exists()}


def test_an_earlier_run_is_replaced_only_with_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "m.pt"
    argv = ["train", "--method", "standard", "--out", str(out), *TINY]
    assert cli.main(argv) == 0
    first = _run_files(out)
    one_epoch = [*argv, "--epochs", "1"]  # the last --epochs wins
    capsys.readouterr()
    assert cli.main(one_epoch) == 2
    assert capsys.readouterr().err == (f"robustness: error: {out} exists (a model trained for 2 epochs); pass "
                                       "--resume to continue it or --overwrite to replace it\n")
    assert _run_files(out) == first
    # a run killed before writing its model left only the state: refused the same way
    out.unlink()
    assert cli.main(one_epoch) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{out}.state exists (the training state of a run after 2 of 2 epochs); pass --resume to continue it or "
        "--overwrite to replace it")
    # --resume with a model whose state is gone would silently start over: refused
    (tmp_path / "m.pt.state").rename(tmp_path / "kept")
    out.write_bytes(first["m.pt"])
    assert cli.main([*one_epoch, "--resume"]) == 2
    assert "nothing to resume: pass --overwrite" in capsys.readouterr().err
    (tmp_path / "kept").rename(tmp_path / "m.pt.state")
    with pytest.raises(SystemExit) as info:
        cli.main([*one_epoch, "--resume", "--overwrite"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "not allowed with argument" in err and len(err.splitlines()) == 1
    assert _run_files(out) == first
    # --overwrite replaces the model, its state and its history
    assert cli.main([*one_epoch, "--overwrite"]) == 0
    assert load_model(str(out)).meta["epochs_completed"] == 1
    assert torch.load(tmp_path / "m.pt.state", weights_only=True)["epoch"] == 1
    assert len(json.loads((tmp_path / "m.pt.history.json").read_text())["records"]) == 1


def test_every_train_flag_reaches_the_library(tmp_path, monkeypatch, capsys) -> None:
    calls: dict[str, object] = {}

    def fit(self, model, loader, **kw):
        calls["trainer"], calls["fit"], calls["loader"] = self, kw, loader
        return TrainingHistory(settings=self.settings())

    def evaluate(self, model, loader, **kw):
        calls["evaluate"] = kw
        return EvalResult(0.9, 0.5, 450, self.eps, self.norm, self.eval_steps)

    monkeypatch.setattr(trainer_module.AdversarialTrainer, "fit", fit)
    monkeypatch.setattr(trainer_module.AdversarialTrainer, "evaluate", evaluate)
    out = tmp_path / "m.pt"
    assert cli.main(["train", "--data", "digits", "--arch", "small-cnn", "--arch-kwargs", "width=6",
                     "--method", "trades", "--eps", "8/255", "--norm", "l2", "--steps", "4", "--step-size", "0.3",
                     "--beta", "3", "--eps-warmup", "2", "--epochs", "7", "--batch-size", "33", "--lr", "0.02",
                     "--weight-decay", "0.001", "--eval-steps", "5", "--eval-samples", "99", "--n", "100",
                     "--out", str(out), "--resume", "--seed", "4", "--device", "cpu", "--threads", "1",
                     "--quiet"]) == 0
    trainer = calls["trainer"]
    assert isinstance(trainer, AdversarialTrainer)
    assert (trainer.method, trainer.norm, trainer.steps, trainer.step_size, trainer.beta) == ("trades", "l2", 4, 0.3, 3.0)
    assert trainer.eps == pytest.approx(8 / 255) and trainer.eps_warmup_epochs == 2 and trainer.seed == 4
    assert (trainer.eval_steps, trainer.eval_samples) == (5, 99)
    fit_kw = calls["fit"]
    assert fit_kw["epochs"] == 7 and fit_kw["resume"] is True and fit_kw["progress"] is False
    assert fit_kw["device"] == torch.device("cpu") and fit_kw["checkpoint"] == tmp_path / "m.pt.state"
    opt = fit_kw["optimizer"]
    assert opt.param_groups[0]["weight_decay"] == 0.001 and fit_kw["scheduler"].state_dict()["total_steps"] == 7 * 4
    assert fit_kw["scheduler_interval"] == "batch"  # the one-cycle schedule counts batches
    assert fit_kw["scheduler"].optimizer.param_groups[0]["max_lr"] == 0.02
    assert calls["loader"].batch_size == 33 and len(calls["loader"].dataset) == 100
    assert torch.get_num_threads() == 1
    loaded = load_model(str(out))
    assert loaded.model.model.width == 6 and loaded.meta["batch_size"] == 33 and loaded.meta["lr"] == 0.02


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "madry"], "invalid choice"),
        (["--eps", "8"], "8/255"),
        (["--eps", "abc"], "not a number"),
        (["--epochs", "0"], "argument --epochs: expected an integer >= 1"),
        (["--arch", "resnet9000"], "unknown architecture"),
        (["--arch-kwargs", "width"], "KEY=VALUE"),
        (["--arch-kwargs", "depth=3"], "does not take depth"),
        (["--data", "missing.npz"], "not found"),
        (["--norm", "l0"], "invalid choice"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_train_input_exits_2_with_one_line(argv, message, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(cli.main(["train", "--out", str(tmp_path / "m.pt"), "--quiet", *argv]))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_missing_out_and_corrupt_state_exit_2(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--quiet"])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err
    (tmp_path / "m.pt.state").write_bytes(b"PK\x03\x04 half a zip file")
    assert cli.main(["train", "--out", str(tmp_path / "m.pt"), "--resume", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt or truncated" in err and len(err.splitlines()) == 1


def test_train_then_evaluate_as_processes(tmp_path) -> None:
    out = tmp_path / "m.pt"
    train = subprocess.run([sys.executable, "-m", "robustness", "train", "--out", str(out), *TINY],
                           check=False, capture_output=True, text=True, timeout=300, env=ENV)
    assert train.returncode == 0, train.stderr
    assert "Traceback" not in train.stderr and load_model(str(out)).meta["epochs_completed"] == 2
    bad = subprocess.run([sys.executable, "-m", "robustness", "train", "--out", str(out), "--eps", "8"],
                         check=False, capture_output=True, text=True, timeout=300, env=ENV)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "8/255" in bad.stderr


def test_shipped_adversarially_trained_model_is_more_robust_than_the_standard_one() -> None:
    path = cli.SHIPPED_MODELS["adv-trained"]
    assert path.is_file() and path.stat().st_size < 1_000_000
    standard, robust = load_model(str(cli.SHIPPED_MODELS["standard"])), load_model(str(path))
    assert robust.meta["method"] == "pgd" and robust.meta["command"].startswith("robustness train")
    from robustness.datasets import load_dataset, to_tensors

    x, y = to_tensors(load_dataset("digits", split="test", n=150, seed=0).dataset)
    judge = AdversarialTrainer(method="pgd", eps=0.1, eval_steps=10)
    ours = judge.evaluate(robust.model, [(x, y)])
    theirs = judge.evaluate(standard.model, [(x, y)])
    assert ours.clean_accuracy > 0.95 and ours.robust_accuracy > theirs.robust_accuracy + 0.3


def test_default_evaluate_compares_both_shipped_models(tmp_path, capsys) -> None:
    """The real default path on a few examples and one small sweep, both models side by side."""
    assert cli.main(["--n", "30", "--eps", "0,0.1", "--attacks", "fgsm", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| eps | standard | adv-trained |" in out
    for label in ("standard", "adv-trained"):
        assert (tmp_path / label / "linf" / "report.json").is_file()
        assert f"{label}: linf: clean" in out


def test_min_accuracy_gates_every_shipped_model(monkeypatch, tmp_path, capsys) -> None:
    from robustness.model_info import ModelInfo
    from robustness.report import Report

    worst = {"S": 0.2, "A": 0.7}

    def evaluate(model, data, *, config):
        return Report(clean_accuracy=1.0, robust_accuracy={0.0: 1.0, 0.1: worst[model]},
                      by_attack={"fgsm": {0.0: 1.0, 0.1: worst[model]}}, n_examples=4, epsilons=[0.0, 0.1],
                      norm=config.norm, bounds=(0.0, 1.0), attacks={"fgsm": "FGSM()"}, seed=0, batch_size=4,
                      device="cpu", versions={}, timings={"total": 0.1}, max_perturbation={0.1: 0.1}, num_classes=10)

    data = SimpleNamespace(name="digits", dataset="D", num_classes=10, input_shape=(1, 8, 8), bounds=(0.0, 1.0))
    monkeypatch.setattr(cli.datasets, "load_dataset", lambda name, **kw: data)
    monkeypatch.setattr(cli, "_shipped_models", lambda: [
        ("standard", SimpleNamespace(model="S", source="s", info=ModelInfo(source="s"), warnings=[])),
        ("adv-trained", SimpleNamespace(model="A", source="a", info=ModelInfo(source="a"), warnings=[]))])
    monkeypatch.setattr(cli.runner, "evaluate", evaluate)
    assert cli.main(["--eps", "0.1", "--attacks", "fgsm", "--min-accuracy", "0.5", "--out", str(tmp_path),
                     "--quiet"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [("FAILED" in line) for line in lines] == [True, False] and lines[0].startswith("standard:")
    assert cli.main(["--eps", "0.1", "--attacks", "fgsm", "--min-accuracy", "0.2", "--out", str(tmp_path),
                     "--quiet"]) == 0
