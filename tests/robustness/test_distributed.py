"""Distributed evaluation: 2 CPU processes (gloo) give exactly the single-process report.

Processes that import torch take seconds to start, so there are three launches in all: one
``torch.multiprocessing.spawn`` of two ranks that runs every Python-API and in-process CLI check,
and two real ``robustness evaluate --nproc 2`` runs through torchrun (one good, one with an input
error on rank 1 only). 150 examples in batches of 64: three batches (an odd number: rank 0 takes
two), the last one of 22 (no padding may be counted).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import robustness
from robustness import cli
from robustness.cli import launch
from robustness.datasets import load_dataset
from robustness.distributed import ProcessGroup, local_device
from robustness.errors import InputError
from robustness.loading import DEFAULT_MODEL_PATH, load_model
from robustness.locking import acquire
from robustness.state import LOCK
from tests.dist_utils import spawn

REPO = Path(__file__).resolve().parents[2]
WORLD = 2
N, BATCH, SEED = 150, 64, 3  # batches of 64, 64 and 22
ATTACKS, EPS = ["fgsm", "pgd(steps=3)"], [0.0, 0.05, 0.1]
CLI_ARGS = ["--model", str(DEFAULT_MODEL_PATH), "--n", str(N), "--batch-size", str(BATCH), "--seed", str(SEED),
            "--attacks", ",".join(ATTACKS), "--eps", ",".join(map(str, EPS))]
TIMEOUT = 180
MARK = 0.123  # the pixel value of the image that makes marked_nan_model return NaN


def _evaluate(**kw: Any) -> robustness.Report:
    model = load_model(str(DEFAULT_MODEL_PATH)).model
    data = load_dataset("digits", split="test", n=N, seed=SEED).dataset
    return robustness.evaluate(model, data, attacks=ATTACKS, epsilons=EPS, batch_size=BATCH, seed=SEED,
                               progress=False, **kw)


def _figures(report: robustness.Report) -> dict[str, Any]:
    """Everything a report says except how long it took."""
    data = report.to_dict()
    del data["timings"]
    data["per_sample"] = report.per_sample
    return data


def _worker(rank: int, tmp: str) -> None:
    """One rank: the Python API, a bad input, and the CLI in a directory of its own."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))  # as torchrun sets them
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)
    try:
        out: dict[str, Any] = {"figures": _figures(_evaluate())}
        # a state directory: rank 0 locks it for every rank; one locked by another process stops every rank
        out["state_figures"] = _figures(_evaluate(state=Path(tmp) / "state"))
        try:
            _evaluate(state=Path(tmp) / "held")
        except InputError as e:
            out["held"] = str(e)
        x, y = torch.rand(100, 1, 8, 8), torch.randint(0, 10, (100,))
        x[70] += 2.0  # out of bounds in batch 1 (rank 1's): every rank checks every batch before gathering
        try:
            robustness.evaluate(load_model(str(DEFAULT_MODEL_PATH)).model, (x, y), attacks="fgsm",
                                epsilons=[0, 0.1], batch_size=BATCH, progress=False)
        except InputError as e:
            out["error"] = str(e)
        home = Path(tmp) / f"rank{rank}"
        home.mkdir()
        os.chdir(home)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            out["code"] = cli.main(["evaluate", *CLI_ARGS, "--out", "report"])
        out["printed"] = printed.getvalue()
        out["files"] = sorted(p.name for p in home.iterdir())
        torch.save(out, Path(tmp) / f"out{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(worker: Any, tmp: str, timeout: float = 120.0) -> None:
    spawn(worker, tmp, WORLD, timeout)


@pytest.fixture(scope="module")
def ranks() -> Iterator[tuple[list[dict[str, Any]], Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "held").mkdir()
        with acquire(Path(tmp) / "held" / LOCK, what="held", fix="wait"):  # another evaluation, for the workers
            _spawn(_worker, tmp)
        yield [torch.load(Path(tmp) / f"out{r}.pt", weights_only=False) for r in range(WORLD)], Path(tmp)


@pytest.fixture()
def single() -> dict[str, Any]:
    return _figures(_evaluate())


def test_two_processes_give_the_single_process_report(ranks, single) -> None:
    results, _ = ranks
    assert single["n_examples"] == N and len(single["per_sample"]["label"]) == N  # each example exactly once
    assert single["checks"] and single["by_attack"] and single["per_class"] and single["perturbation"]
    for r in results:  # every rank returns rank 0's report
        assert r["figures"] == single


def test_a_state_directory_is_locked_by_rank_0_for_every_rank(ranks, single) -> None:
    results, tmp = ranks
    for r in results:
        assert r["state_figures"] == single
        # rank 0's error, on every rank
        assert r["held"].startswith(f"the evaluation state {tmp / 'held'} is in use by pid {os.getpid()} on ")
    assert sorted(p.name for p in (tmp / "state").glob("range-*.pt")) == [f"range-{o:012d}.pt" for o in (0, 64, 128)]
    assert sorted(p.name for p in (tmp / "held").iterdir()) == [LOCK]  # nobody evaluated into it


def test_bad_input_is_an_input_error_on_every_rank(ranks) -> None:
    results, _ = ranks
    for r in results:
        assert "batch 1" in r["error"] and "bounds" in r["error"]


def test_only_rank_0_writes_and_prints(ranks, single) -> None:
    results, tmp = ranks
    assert [r["code"] for r in results] == [0, 0]
    assert results[0]["files"] == ["report"] and results[1]["files"] == []
    assert results[1]["printed"] == "" and "150 examples" in results[0]["printed"]
    saved = json.loads((tmp / "rank0" / "report" / "report.json").read_text())
    assert saved["robust_accuracy"] == single["robust_accuracy"] and saved["checks"] == single["checks"]


def _run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robustness", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_nproc_end_to_end_writes_the_single_process_report(tmp_path) -> None:
    proc = _run_cli(["evaluate", "--nproc", "2", *CLI_ARGS, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("150 examples") == 1  # printed by rank 0 only
    assert cli.main(["evaluate", *CLI_ARGS, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    del one["timings"], two["timings"]
    assert one == two
    assert (tmp_path / "one" / "samples.csv").read_text() == (tmp_path / "two" / "samples.csv").read_text()


class _NaNOnMarked(nn.Module):
    """A linear classifier that returns NaN logits for the marked image."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        logits = self.fc(flat)
        return torch.where((flat == MARK).all(dim=1, keepdim=True), torch.full_like(logits, float("nan")), logits)


def marked_nan_model() -> nn.Module:
    """``--model tests.robustness.test_distributed:marked_nan_model``."""
    torch.manual_seed(0)
    return _NaNOnMarked()


def test_nproc_input_error_on_one_rank_exits_2_without_hanging(tmp_path) -> None:
    """Rank 1 alone meets the bad image while rank 0 waits to gather: torchrun stops rank 0, exit 2."""
    from sklearn.datasets import load_digits

    x = (load_digits().images[:100] / 16.0).astype(np.float32)[:, None]
    x[70] = MARK  # batch 1 (examples 64..99) belongs to rank 1
    np.savez(tmp_path / "data.npz", x=x, y=load_digits().target[:100])
    proc = _run_cli(["evaluate", "--nproc", "2", "--model", "tests.robustness.test_distributed:marked_nan_model",
                     "--data", str(tmp_path / "data.npz"), "--batch-size", str(BATCH), "--attacks", "fgsm",
                     "--eps", "0,0.1", "--no-checks", "--quiet", "--out", str(tmp_path / "out")])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("robustness: error: the model returned NaN")
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- in-process units


@given(world=st.integers(1, 8), batches=st.integers(0, 40))
def test_every_batch_is_owned_by_exactly_one_rank(world: int, batches: int) -> None:
    groups = [ProcessGroup(rank=r, world_size=world, backend="gloo", tensor_device=torch.device("cpu"))
              for r in range(world)]
    owners = [[g.rank for g in groups if g.owns(b)] for b in range(batches)]
    assert all(len(o) == 1 for o in owners)
    loads = [sum(o == [r] for o in owners) for r in range(world)]
    assert max(loads, default=0) - min(loads, default=0) <= 1


def test_distributed_true_without_torchrun_says_how_to_launch(monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(InputError, match="torchrun"):
        robustness.evaluate(model, (torch.rand(4, 1, 8, 8), torch.zeros(4).long()), attacks="fgsm", epsilons=[0],
                            distributed=True, progress=False)


def test_each_rank_takes_its_own_gpu(monkeypatch) -> None:
    from robustness.distributed import TorchrunEnv

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    env = TorchrunEnv(rank=1, local_rank=1, world_size=2)
    assert local_device(torch.device("cuda"), env) == torch.device("cuda", 1)
    with pytest.raises(InputError, match="cuda:LOCAL_RANK"):
        local_device(torch.device("cuda:0"), env)  # both ranks of this node on one GPU
    with pytest.raises(InputError, match="at most 2 processes per node"):
        local_device(torch.device("cuda"), TorchrunEnv(rank=2, local_rank=2, world_size=3))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA_VISIBLE_DEVICES: one GPU each
    assert local_device(torch.device("cuda:0"), env) == torch.device("cuda:0")
    assert local_device(torch.device("cpu"), env) == torch.device("cpu")


@pytest.mark.parametrize(("argv", "expected"), [
    (["evaluate", "--nproc", "2", "--n", "5"], ["evaluate", "--n", "5"]),
    (["evaluate", "--nproc=2", "--out", "o"], ["evaluate", "--out", "o"]),
    (["train", "--npro", "4", "--out", "m.pt", "--n", "3"], ["train", "--out", "m.pt", "--n", "3"]),
])
def test_strip_nproc(argv: list[str], expected: list[str]) -> None:
    assert launch.strip_nproc(argv) == expected


def test_relaunch_runs_torchrun_and_keeps_rank_0s_exit_code(monkeypatch) -> None:
    seen: dict[str, Any] = {}

    class FakePopen:
        def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
            seen["cmd"], seen["env"] = cmd, env
            directory = Path(env[launch.LAUNCH_DIR_ENV])
            (directory / "rank-0.json").write_text(json.dumps({"rank": 0, "code": 1, "message": None}))
            (directory / "rank-1.json").write_text(json.dumps({"rank": 1, "code": 1, "message": None}))

        def wait(self, timeout: float | None = None) -> int:
            return 1  # torchrun: a rank exited non-zero

    for var in ("WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(launch.subprocess, "Popen", FakePopen)
    assert launch.relaunch(["evaluate", "--nproc", "3", "--n", "5"], 3) == 1  # the --min-accuracy gate, not 2
    cmd = seen["cmd"]
    assert cmd[1:3] == ["-m", "robustness.cli.launch"] and "--standalone" in cmd and "--nproc_per_node=3" in cmd
    assert cmd[cmd.index("-m", 3):] == ["-m", "robustness", "--", "evaluate", "--n", "5"]
    assert seen["env"]["OMP_NUM_THREADS"] == str(launch.threads_per_process(3))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    launch.relaunch(["evaluate"], 2)
    assert seen["env"]["OMP_NUM_THREADS"] == "7"  # the user's setting wins
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(InputError, match="torchrun"):
        launch.relaunch(["evaluate"], 2)


def test_exit_code_of_a_launch(capsys) -> None:
    ok = {"code": 0, "message": None}
    assert launch._exit_code(0, {0: {**ok, "rank": 0}, 1: {**ok, "rank": 1}}) == 0
    assert launch._exit_code(1, {1: {"rank": 1, "code": 2, "message": "bad x"}}) == 2  # rank 0 was stopped
    assert capsys.readouterr().err == "robustness: error: bad x\n"
    both = {r: {"rank": r, "code": 2, "message": "same"} for r in (0, 1)}
    assert launch._exit_code(1, both) == 2 and capsys.readouterr().err.count("same") == 1
    assert launch._exit_code(1, {}) == 3  # a crash: no rank recorded anything (not 1, the gate's code)
    assert launch._exit_code(1, {0: {**ok, "rank": 0}}) == 3  # rank 0 fine, another rank crashed
    assert launch._exit_code(0, {0: {"rank": 0, "code": 1, "message": None}}) == 1  # the gate failed on rank 0
