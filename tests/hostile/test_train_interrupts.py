"""`robustness train` killed (SIGKILL) or interrupted (SIGINT, Ctrl-C) mid-run, then resumed, ends
exactly where an uninterrupted run ends: bit-identical weights, the same history and final report.

The interrupted runs are child processes running the real CLI, whose training data stall once the
first checkpoint is on disk (inside epoch 2) and say so with a marker file, so that the test signals
them at a known point. The uninterrupted run and the resumes run in the test's own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustness import cli

CHILD = textwrap.dedent("""
    import dataclasses, sys, time
    from pathlib import Path
    from robustness import cli, datasets
    from tests.hostile.stalling import Stalling

    marker, argv = Path(sys.argv[1]), sys.argv[2:]
    state = Path(argv[argv.index("--out") + 1] + ".state")
    real_load = datasets.load_dataset

    def stall(i):
        if state.exists():  # epoch 1 is saved: wait here for the parent's signal
            marker.touch()
            time.sleep(600)

    def load(name, **kw):
        data = real_load(name, **kw)
        return dataclasses.replace(data, dataset=Stalling(data.dataset, stall)) if kw.get("split") == "train" else data

    datasets.load_dataset = load
    raise SystemExit(cli.main(argv))
""")

TRAIN = ["train", "--arch", "small-cnn", "--arch-kwargs", "width=4", "--method", "pgd", "--steps", "1",
         "--epochs", "3", "--batch-size", "64", "--eval-steps", "2", "--eval-samples", "32", "--seed", "2",
         "--threads", "1", "--quiet"]
REPO = Path(__file__).resolve().parents[2]  # on the children's path: they import tests.hostile.stalling
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
SIGNALS = {"SIGKILL": (signal.SIGKILL, -signal.SIGKILL), "SIGINT": (signal.SIGINT, 130)}  # 130: the CLI's Ctrl-C

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _argv(data: Path, run: Path, *extra: str) -> list[str]:
    return [*TRAIN, "--data", str(data), "--out", str(run / "m.pt"), *extra]


def _result(run: Path) -> dict[str, Any]:
    """What a run leaves, timings aside: the weights, the history and the final report in the model's meta."""
    saved = torch.load(run / "m.pt", weights_only=True)
    meta = {k: v for k, v in saved["meta"].items() if k not in ("command", "train_seconds")}
    history = json.loads((run / "m.pt.history.json").read_text())
    for record in history["records"]:
        record.pop("seconds"), record.pop("val_seconds")
    return {"weights": saved["state_dict"], "meta": meta, "history": history}


def test_a_killed_or_interrupted_train_resumes_to_the_uninterrupted_result(digits, tmp_path, capsys) -> None:
    """Only the victims run as processes (to be signalled); the uninterrupted and resumed runs run here."""
    data = tmp_path / "digits.npz"  # a file, not --data digits: the children skip importing scikit-learn
    np.savez(data, x=digits[0][:192].numpy(), y=digits[1][:192].numpy())
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    victims = {}
    for name in SIGNALS:
        (tmp_path / name).mkdir()
        victims[name] = subprocess.Popen([sys.executable, str(script), str(tmp_path / name / "stalled"),
                                          *_argv(data, tmp_path / name)],
                                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert cli.main(_argv(data, tmp_path / "full")) == 0
    expected = _result(tmp_path / "full")
    deadline = time.monotonic() + 240
    for name, proc in victims.items():
        marker = tmp_path / name / "stalled"
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), f"{name}: the victim never reached epoch 2: {proc.communicate()[1]}"
        proc.send_signal(SIGNALS[name][0])
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == SIGNALS[name][1], err
        run = tmp_path / name
        killed = torch.load(run / "m.pt.state", weights_only=True)  # epoch 1's, intact
        assert killed["epoch"] == 1 and not (run / "m.pt").exists(), name
        assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")], name

        assert cli.main(_argv(data, run, "--resume")) == 0
        got = _result(run)
        assert got["weights"].keys() == expected["weights"].keys()
        assert all(torch.equal(got["weights"][k], v) for k, v in expected["weights"].items()), \
            f"{name}: the resumed weights differ from the uninterrupted run's"
        assert got["history"] == expected["history"] and got["meta"] == expected["meta"], name
        # it resumed (a fresh start would give the same numbers too): epoch 1 is the killed run's, timing included
        first = json.loads((run / "m.pt.history.json").read_text())["records"][0]
        assert first["seconds"] == killed["history"]["records"][0]["seconds"], name
