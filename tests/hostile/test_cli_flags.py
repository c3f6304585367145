"""Every flag of `robustness evaluate` and `robustness train` given garbage exits 2 with one line.

The cases come from the argparse parser itself, so a new flag is covered the day it is added:
every flag gets an empty and a blank value (an unset shell variable: never the default); a
number gets NaN, infinities, a negative, a non-number and an overflowing float; an integer also
a fraction and a value beyond 64 bits; a choice an unknown choice; a switch a value; and the
free-text flags the garbage of their kind (``TEXT``). Each must exit 2, never 0 (a silent
wrong answer), 1 (the gate's code) or 3 (a crash), with one line on stderr that names the flag,
before any evaluation, training or launch of workers (these are stubbed to fail loudly). The
whole file runs in seconds: nothing is evaluated or trained.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustness import cli
from robustness.defenses.trainer import AdversarialTrainer
from robustness.loading import DEFAULT_MODEL_PATH

#: the flags that take free text (a path, a name, a list), and garbage for each; "/proc/self/x" is
#: a path that nobody, root included, can create files in
TEXT: dict[str, list[str]] = {
    "--model": ["/no/such/model.pt", "no_such_module_q7:make", "torchvision:no_such_net"],
    "--arch": ["no-such-arch"],
    "--weights": ["no-such-weights", "IMAGENET1K_V1"],  # only for torchvision:NAME (the base model is a file)
    "--model-dir": ["/no/such/dir"],  # only for robustbench:NAME
    "--model-info": ["/no/such/dir"],  # only for robustbench:NAME
    "--corruptions": ["no_such_corruption", "fog,,snow"],  # only with a corruptions data source
    "--severities": ["0", "6", "1.5", "abc", "1,,2"],
    "--mean": ["nan", "abc", "0.5,,0.5"],
    "--std": ["inf", "0"],
    "--data": ["/no/such/data.npz", "no-such-dataset", "imagefolder:/no/such/dir"],
    "--data-dir": [],  # any directory is a place to look: only empty values are garbage
    "--attacks": ["no-such-attack", "fgsm,,pgd", "pgd(", "pgd(steps=-1)", "art:NoSuchAttack"],
    "--eps": ["nan", "inf", "-1", "abc", "1e400", "1/0", "0.1,,0.2", "0.1,"],
    "--state": ["/proc/self/x"],
    "--device": ["tpu", "cpu:3", "cuda:99", "meta"],
    "--out": ["/proc/self/x"],
    "--arch-kwargs": ["width", "=3", "depth=3"],
}
EMPTY = ["", "   "]
NUMBER = ["nan", "inf", "-inf", "-1", "abc", "1e400"]
INTEGER = ["1.5", "99999999999999999999"]
#: a fast, valid command line for each command; the flag under test comes last (and wins)
BASE = {
    "evaluate": ["--model", str(DEFAULT_MODEL_PATH), "--n", "8", "--attacks", "fgsm", "--eps", "0,0.1",
                 "--no-checks"],
    "train": ["--n", "16", "--epochs", "1", "--steps", "1", "--eval-samples", "8", "--eval-steps", "1"],
}


def _kind(action: argparse.Action) -> str:
    """``switch``, ``choice``, ``integer``, ``number`` or ``text``: what the flag's argparse type accepts."""
    if action.nargs == 0:
        return "switch"
    if action.choices is not None:
        return "choice"
    if action.type is None or action.type is str.lower:
        return "text"

    def accepts(text: str) -> bool:
        try:
            action.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            return False
        return True

    accepted = [v for v in ("0", "1", "3", "0.5", "1.5") if accepts(v)]
    if not accepted:
        return "text"
    return "number" if {"0.5", "1.5"} & set(accepted) else "integer"


def _garbage(flag: str, kind: str) -> list[str]:
    if kind == "switch":
        return ["yes"]
    if kind == "choice":
        return [*EMPTY, "no-such-choice"]
    if kind == "number":
        return [*EMPTY, *NUMBER]
    if kind == "integer":
        return [*EMPTY, *NUMBER, *INTEGER]
    if flag not in TEXT:
        pytest.fail(f"{flag} takes free text: add the garbage it must refuse to TEXT in {__file__}")
    return [*EMPTY, *TEXT[flag]]


def _cases() -> Iterator[object]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for command in ("evaluate", "train"):
        for action in sub.choices[command]._actions:
            flags = [f for f in action.option_strings if f.startswith("--")]
            if not flags or action.dest in ("help",):
                continue
            for value in _garbage(flags[0], _kind(action)):
                yield pytest.param(command, flags[0], value, id=f"{command} {flags[0]}={value!r}")


@pytest.fixture()
def no_work(monkeypatch):
    """Evaluation, training and launching workers fail loudly: garbage must be refused before them."""
    def reached(*args, **kwargs):
        raise RuntimeError("REACHED THE WORK: the garbage value was accepted")

    import robustness.cli.launch

    monkeypatch.setattr(cli.runner, "evaluate", reached)
    monkeypatch.setattr(AdversarialTrainer, "fit", reached)
    monkeypatch.setattr(robustness.cli.launch, "relaunch", reached)


@pytest.mark.parametrize(("command", "flag", "value"), list(_cases()))
def test_garbage_in_any_flag_exits_2_on_one_line(command: str, flag: str, value: str, no_work, tmp_path: Path,
                                                  capsys) -> None:
    out = tmp_path / ("report" if command == "evaluate" else "model.pt")
    argv = [command, *BASE[command], "--out", str(out), *([] if flag in ("--quiet", "--verbose") else ["--quiet"])]
    argv += [f"{flag}={value}"] if value == "yes" else [flag, value]  # --flag=VALUE: a switch given a value
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}: {err}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert flag in err, f"does not name {flag}: {err}"
    assert not out.exists()


def test_every_command_and_flag_kind_is_covered() -> None:
    cases = list(_cases())
    flags = {(c.values[0], c.values[1]) for c in cases}
    assert ("evaluate", "--strict") in flags and ("train", "--threads") in flags and ("evaluate", "--eps") in flags
    assert len(cases) > 200
