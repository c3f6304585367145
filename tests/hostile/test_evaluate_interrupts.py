"""`robustness evaluate --state DIR` killed (SIGKILL), interrupted (SIGINT, Ctrl-C) or raced by a second run.

* A killed or interrupted evaluation, run again, ends with the report of an uninterrupted run (timings
  aside), without evaluating its finished range again; the lock a SIGKILLed run leaves behind does
  not block the resume.
* Two runs with different seeds started at the same moment on one empty state directory: exactly one
  evaluates, the other exits 2 at once naming the holder, and the directory holds the winner's
  evaluation only (repeated a few times: which one wins is up to the race).

The victims and racers are child processes running the real CLI on 64 examples in 4 ranges of 16.
Their data stall once the first range is saved (inside the second range) until the test releases
them, saying so with a marker file, so that every signal lands at a known point and the race's
winner is still running when its rival opens the directory. The uninterrupted runs and the resumes
run in the test's own process.
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

from robustness import cli
from robustness.loading import DEFAULT_MODEL_PATH
from robustness.state import LOCK, META

# argv: a folder of control files, this run's name, the number of rounds, then the CLI's arguments, in
# which {r} is replaced by the round. Round r waits for the file go<r>, runs the CLI once (its data stall
# in the second range once the first is saved, touching <name>.stalled<r>, until release<r> exists) and
# writes the exit code and stderr to <name>.rc<r> and <name>.err<r>. It exits with the last round's code.
CHILD = textwrap.dedent("""
    import contextlib, dataclasses, io, sys, time
    from pathlib import Path
    from robustness import cli, datasets
    from tests.hostile.stalling import Stalling

    control, name, rounds, template = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    real_load = datasets.load_dataset

    def wait_for(path):
        while not path.exists():
            time.sleep(0.002)

    for r in range(rounds):
        argv = [a.replace("{r}", str(r)) for a in template]
        state = Path(argv[argv.index("--state") + 1])

        def stall(i, state=state, release=control / f"release{r}", marker=control / f"{name}.stalled{r}"):
            if i >= 16 and (state / "range-000000000000.pt").exists() and not release.exists():
                marker.touch()
                wait_for(release)

        def load(*args, stall=stall, **kw):
            data = real_load(*args, **kw)
            return dataclasses.replace(data, dataset=Stalling(data.dataset, stall))

        datasets.load_dataset = load
        wait_for(control / f"go{r}")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(argv)
        (control / f"{name}.err{r}").write_text(err.getvalue())
        (control / f"{name}.rc{r}.tmp").write_text(str(code))
        (control / f"{name}.rc{r}.tmp").rename(control / f"{name}.rc{r}")  # whole, once it appears
    raise SystemExit(code)
""")

EVALUATE = ["evaluate", "--model", str(DEFAULT_MODEL_PATH), "--batch-size", "16", "--attacks", "fgsm,pgd(steps=2)",
            "--eps", "0,0.05,0.1", "--no-checks", "--quiet"]
REPO = Path(__file__).resolve().parents[2]  # on the children's path: they import tests.hostile.stalling
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
SIGNALS = {"SIGKILL": (signal.SIGKILL, -signal.SIGKILL), "SIGINT": (signal.SIGINT, 130)}  # 130: the CLI's Ctrl-C
RACES = 3
TIMEOUT = 120  # seconds for each victim, and for each round of the race

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture()
def setup(digits, tmp_path) -> tuple[Path, Path]:
    """The data file (a file, not --data digits: the children skip importing scikit-learn) and the child script."""
    data = tmp_path / "digits.npz"
    np.savez(data, x=digits[2][:64].numpy(), y=digits[3][:64].numpy())
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return data, script


def _start(script: Path, control: Path, name: str, rounds: int, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script), str(control), name, str(rounds), *argv], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(paths: list[Path], procs: list[subprocess.Popen[str]], deadline: float) -> Path:
    """The first of ``paths`` to appear; a failure (never a hang) if a child ends first or time runs out."""
    while True:
        for path in paths:
            if path.exists():
                return path
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.005)
    errors = [p.communicate(timeout=30)[1] if p.poll() is not None else "(running)" for p in procs]
    pytest.fail(f"none of {[p.name for p in paths]} appeared: {errors}")


def _report(out: Path) -> dict[str, Any]:
    report = json.loads((out / "report.json").read_text())
    del report["timings"]
    return report


def _ranges(state: Path) -> dict[str, tuple[int, int]]:
    """Record files by name, with (inode, mtime): a rewrite replaces the inode (atomic rename)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(state.glob("range-*.pt"))}


def test_a_killed_or_interrupted_evaluate_resumes_to_the_uninterrupted_report(setup, tmp_path) -> None:
    data, script = setup
    control = tmp_path / "control"
    control.mkdir()
    argv = {name: [*EVALUATE, "--data", str(data), "--state", str(tmp_path / name / "state"),
                   "--out", str(tmp_path / name / "out")] for name in SIGNALS}
    victims = {name: _start(script, control, name, 1, argv[name]) for name in SIGNALS}
    try:
        (control / "go0").touch()
        assert cli.main([*EVALUATE, "--data", str(data), "--out", str(tmp_path / "full")]) == 0
        expected = _report(tmp_path / "full")
        deadline = time.monotonic() + TIMEOUT
        for name, proc in victims.items():
            _wait([control / f"{name}.stalled0"], [proc], deadline)
            proc.send_signal(SIGNALS[name][0])
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == SIGNALS[name][1], err
    finally:
        for proc in victims.values():
            proc.kill()
            proc.communicate()

    for name, proc in victims.items():
        state, out = tmp_path / name / "state", tmp_path / name / "out"
        killed = _ranges(state)
        assert list(killed) == ["range-000000000000.pt"] and not out.exists(), name
        lock = (state / LOCK).read_text()
        if name == "SIGKILL":  # the dead holder is still written in the lock file: harmless, as the resume shows
            assert json.loads(lock)["pid"] == proc.pid
        else:  # Ctrl-C released the lock on the way out
            assert lock == ""
        assert cli.main(argv[name]) == 0, name
        assert _report(out) == expected, f"{name}: the resumed report differs from the uninterrupted one"
        assert (out / "samples.csv").read_text() == (tmp_path / "full" / "samples.csv").read_text(), name
        finished = _ranges(state)
        assert len(finished) == 4 and finished["range-000000000000.pt"] == killed["range-000000000000.pt"], \
            f"{name}: the range finished before the signal was evaluated again"


def test_two_runs_racing_on_one_state_directory_one_wins_the_other_names_it(setup, tmp_path) -> None:
    data, script = setup
    control = tmp_path / "control"
    control.mkdir()
    seeds = {"a": 0, "b": 1}
    expected = {}
    for name, seed in seeds.items():
        assert cli.main([*EVALUATE, "--data", str(data), "--seed", str(seed), "--out", str(tmp_path / name)]) == 0
        expected[name] = _report(tmp_path / name)
    assert expected["a"] != expected["b"]  # the seeds give other numbers: a mixed directory would show

    argv = {name: [*EVALUATE, "--data", str(data), "--seed", str(seed), "--state", str(tmp_path / "state{r}"),
                   "--out", str(tmp_path / f"out{{r}}-{name}")] for name, seed in seeds.items()}
    racers = {name: _start(script, control, name, RACES, argv[name]) for name in seeds}
    procs = list(racers.values())
    winners = []
    try:
        for r in range(RACES):
            deadline = time.monotonic() + TIMEOUT
            (control / f"go{r}").touch()
            first = _wait([control / f"{n}.rc{r}" for n in seeds], procs, deadline)  # the loser's: the winner stalls
            loser = first.name.split(".")[0]
            winner = next(n for n in seeds if n != loser)
            error = (control / f"{loser}.err{r}").read_text()
            assert (control / f"{loser}.rc{r}").read_text() == "2", error
            assert f"the evaluation state {tmp_path / f'state{r}'} is in use by pid {racers[winner].pid} on " in error
            assert "(--state)" in error and len(error.strip().splitlines()) == 1, error
            (control / f"release{r}").touch()
            _wait([control / f"{winner}.rc{r}"], [racers[winner]], deadline)
            assert (control / f"{winner}.rc{r}").read_text() == "0", (control / f"{winner}.err{r}").read_text()
            assert _report(tmp_path / f"out{r}-{winner}") == expected[winner], f"round {r}"
            assert not (tmp_path / f"out{r}-{loser}").exists()
            meta = json.loads((tmp_path / f"state{r}" / META).read_text())
            assert meta["fingerprint"]["seed"] == seeds[winner]
            winners.append(winner)
        for name, proc in racers.items():
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == int((control / f"{name}.rc{RACES - 1}").read_text()), err
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()

    # later: the winner's command resumes (nothing left to evaluate), the loser's is refused by name
    state = tmp_path / "state0"
    winner, loser = winners[0], next(n for n in seeds if n != winners[0])
    again = [a.replace("{r}", "0").replace(f"out0-{winner}", "again") for a in argv[winner]]
    assert cli.main(again) == 0 and _report(tmp_path / "again") == expected[winner]
    before = _ranges(state)
    assert cli.main([a.replace("{r}", "0") for a in argv[loser]]) == 2
    assert _ranges(state) == before
