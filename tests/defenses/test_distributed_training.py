"""AdversarialTrainer.fit under DistributedDataParallel: 2 CPU processes (gloo) against one process.

One launch of two processes runs every distributed scenario (starting processes that import torch
costs seconds); the single-process references run in the test process. The global batch is the
same: 2 ranks x 16 examples under DDP, 32 examples in one process, and both draw the same
permutation each epoch (``DistributedSampler(seed=0)``: rank ``r`` takes positions ``r, r+2,
...``, so each global batch of the two ranks is the same 32 examples as the single-process batch).

Tolerances. With ``method="standard"`` (no random draw) and a model without BatchNorm a DDP step is
the single-process step up to the order of float additions (two half-batch means averaged by an
all-reduce instead of one mean, per-rank loss sums added in float64): the epoch losses agree to
1e-6 relative after 24 steps (we saw 2e-8). With ``method="pgd"`` each rank draws its own random
starts (the single process draws them for the whole batch at once), so the adversarial inputs,
and thus the losses, differ by the spread of a random start: we allow 0.05 absolute on losses of
about 2 (we saw 0.0006, 0.002, 0.011 over the three epochs). On every rank the final parameters
and buffers are bit for bit the same.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from robustness.defenses.trainer import AdversarialTrainer
from robustness.architectures import SmallCNN
from robustness import cli
from robustness.errors import InputError
from robustness.loading import load_model
from tests.dist_utils import spawn

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

WORLD = 2
PER_RANK = 16
N_TRAIN = 256
EPOCHS = 3
STANDARD_RTOL = 1e-6
PGD_ATOL = 0.05


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    return x[:N_TRAIN], y[:N_TRAIN], x[1500:1564], y[1500:1564]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, num_classes=10, input_size=8, width=4)  # with BatchNorm


def _loader(x: torch.Tensor, y: torch.Tensor, batch: int, replicas: int, rank: int) -> DataLoader:
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch, sampler=DistributedSampler(ds, num_replicas=replicas, rank=rank,
                                                                        shuffle=True, seed=0))


def _run(method: str, model: nn.Module, loader: DataLoader, *, epochs: int = EPOCHS, checkpoint: Path | None = None,
         resume: bool = False, val: DataLoader | None = None, **kw: Any) -> tuple[list[float], dict[str, Any]]:
    torch.manual_seed(1)  # the global RNG (DataLoader base seeds) starts alike in every run
    trainer = AdversarialTrainer(method=method, eps=0.1, steps=2, seed=0, eval_steps=2, eval_samples=64, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = trainer.fit(model, loader, epochs=epochs, optimizer=opt, checkpoint=checkpoint, resume=resume,
                          val_loader=val, progress=False)
    return [r.loss for r in history.records], {"records": [vars(r) for r in history.records]}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, tmp: str) -> None:
    """One rank: every distributed scenario, results to ``tmp/rank{rank}.pt``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)
    try:
        x, y, xv, yv = _data()
        out: dict[str, Any] = {}
        errors = []
        plain = DataLoader(TensorDataset(x, y), batch_size=PER_RANK, shuffle=True)
        for bad in (plain, _loader(x, y, PER_RANK, 1, 0)):  # no DistributedSampler; one for another world
            try:
                _run("standard", _mlp(), bad)
            except InputError as e:
                errors.append(str(e))
        out["errors"] = errors

        model = _mlp()
        out["standard"] = _run("standard", model, _loader(x, y, PER_RANK, WORLD, rank))[0]
        out["standard_state"] = _state(model)
        assert isinstance(model, nn.Sequential)  # the caller's object, unwrapped

        # DDP's hooks are gone: a plain backward on rank-specific data leaves rank-specific gradients
        model.zero_grad()
        nn.functional.cross_entropy(model(x[rank::WORLD][:8]), y[rank::WORLD][:8]).backward()
        out["grad_after"] = model[1].weight.grad.clone()

        model = _mlp()
        val = DataLoader(TensorDataset(xv, yv), batch_size=32)
        out["pgd"], out["pgd_history"] = _run("pgd", model, _loader(x, y, PER_RANK, WORLD, rank), val=val,
                                              track_clean=True)
        out["pgd_state"] = _state(model)

        # TRADES (two DDP passes per step), BatchNorm: interrupted after 2 epochs and resumed to 3
        ckpt = Path(tmp) / "trades.state"
        _run("trades", _cnn(), _loader(x, y, PER_RANK, WORLD, rank), epochs=2, checkpoint=ckpt)
        resumed = _cnn()
        out["resumed"] = _run("trades", resumed, _loader(x, y, PER_RANK, WORLD, rank), checkpoint=ckpt,
                              resume=True)[0]
        out["resumed_state"] = _state(resumed)
        straight = _cnn()
        out["straight"] = _run("trades", straight, _loader(x, y, PER_RANK, WORLD, rank),
                               checkpoint=Path(tmp) / "straight.state")[0]
        out["straight_state"] = _state(straight)

        # FGSM-RS attacking in training mode (its passes go through DDP), its guard on a batch of rank 0's
        guarded = _cnn()
        out["train_mode"] = _run("fgsm-rs", guarded, _loader(x, y, PER_RANK, WORLD, rank), epochs=2,
                                 attack_mode="train", guard_samples=32)[1]
        out["train_mode_state"] = _state(guarded)

        # `robustness train` under torchrun (the group exists; the variables say which rank this is)
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
        home = Path(tmp) / f"home{rank}"
        home.mkdir()
        os.chdir(home)
        out["cli"] = cli.main(["train", "--method", "fgsm-rs", "--epochs", "2", "--n", "128", "--batch-size", "32",
                               "--arch-kwargs", "width=4", "--eval-steps", "2", "--eval-samples", "32",
                               "--threads", "1", "--quiet", "--out", "model.pt"])
        out["cli_files"] = sorted(p.name for p in home.iterdir())
        torch.save(out, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(worker: Any, tmp: str, timeout: float = 120.0) -> None:
    spawn(worker, tmp, WORLD, timeout)


@pytest.fixture(scope="module")
def ranks() -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as tmp:
        _spawn(_worker, tmp)
        results = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
        state = torch.load(Path(tmp) / "trades.state", weights_only=True)
        for r in results:
            r["cli_model"] = load_model(str(Path(tmp) / "home0" / "model.pt")) if "model.pt" in r["cli_files"] else None
        yield results, state


def _equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_standard_training_matches_one_process_with_the_same_global_batch(ranks) -> None:
    results, _ = ranks
    x, y, _, _ = _data()
    single = _mlp()
    losses = _run("standard", single, _loader(x, y, WORLD * PER_RANK, 1, 0))[0]
    for r in results:
        assert r["standard"] == pytest.approx(losses, rel=STANDARD_RTOL)
    assert losses[-1] < losses[0]  # it trained
    assert _equal_states(results[0]["standard_state"], results[1]["standard_state"])
    for k, v in _state(single).items():
        torch.testing.assert_close(results[0]["standard_state"][k], v, rtol=1e-3, atol=1e-5)


def test_pgd_training_matches_one_process_within_the_random_start_spread(ranks) -> None:
    results, _ = ranks
    x, y, xv, yv = _data()
    single, _ = _run("pgd", _mlp(), _loader(x, y, WORLD * PER_RANK, 1, 0),
                     val=DataLoader(TensorDataset(xv, yv), batch_size=32), track_clean=True)
    assert results[0]["pgd"] == results[1]["pgd"]  # the logged loss is the global one, on every rank
    assert results[0]["pgd"] == pytest.approx(single, abs=PGD_ATOL)
    assert _equal_states(results[0]["pgd_state"], results[1]["pgd_state"])
    h0, h1 = results[0]["pgd_history"]["records"], results[1]["pgd_history"]["records"]
    for a, b in zip(h0, h1):  # validation ran on rank 0 and was shared
        assert a["val_robust_accuracy"] == b["val_robust_accuracy"] is not None
        assert a["train_clean_accuracy"] == b["train_clean_accuracy"] is not None


def test_resumed_distributed_run_equals_an_uninterrupted_one(ranks) -> None:
    results, state = ranks
    for r in results:
        assert r["resumed"] == r["straight"]
        assert _equal_states(r["resumed_state"], r["straight_state"])
    assert _equal_states(results[0]["straight_state"], results[1]["straight_state"])  # BatchNorm buffers too
    assert state["world_size"] == WORLD and len(state["rng_ranks"]) == WORLD
    g0, g1 = (s["generators"][0] for s in state["rng_ranks"])
    assert not torch.equal(g0, g1)  # each rank its own random stream


def test_loader_without_a_matching_distributed_sampler_is_an_input_error(ranks) -> None:
    results, _ = ranks
    for r in results:
        first, second = r["errors"]
        assert "DistributedSampler" in first and "set_epoch" in first
        assert "rank" in second and "of 1" in second


def test_ddp_is_released_after_fit(ranks) -> None:
    results, _ = ranks
    assert not torch.equal(results[0]["grad_after"], results[1]["grad_after"])


def test_distributed_true_without_a_group_or_torchrun_says_how_to_launch(monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    x, y, _, _ = _data()
    model = _mlp()
    with pytest.raises(InputError, match="torchrun"):
        AdversarialTrainer(method="standard", eps=0.1).fit(
            model, _loader(x, y, 32, 1, 0), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            distributed=True)


def test_cli_train_under_torchrun_writes_on_rank_0_only(ranks) -> None:
    results, _ = ranks
    assert [r["cli"] for r in results] == [0, 0]
    assert results[0]["cli_files"] == ["model.pt", "model.pt.history.json", "model.pt.state"]
    assert results[1]["cli_files"] == []
    meta = results[0]["cli_model"].meta
    assert meta["processes"] == WORLD and meta["batch_size"] == 32 and meta["epochs_completed"] == 2


def test_attack_in_training_mode_and_the_guard_under_ddp(ranks) -> None:
    results, _ = ranks
    assert _equal_states(results[0]["train_mode_state"], results[1]["train_mode_state"])
    h0, h1 = (r["train_mode"]["records"] for r in results)
    assert [a["guard_accuracy"] for a in h0] == [b["guard_accuracy"] for b in h1]
    assert h0[0]["guard_accuracy"] is not None
