"""Code the command runs that tries to end it: `robustness evaluate` never exits 0 without a report.

A model factory or a model's forward that calls ``sys.exit(0)`` once ended the command with
exit 0 and no report: a CI gate that passed without any evaluation. Each case here must exit
2 (the model's doing) or 3 (anything else), on one line, and leave no report behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from robustness import cli

FAST = ["--n", "4", "--attacks", "fgsm", "--eps", "0,0.1", "--quiet", "--no-checks"]
MODELS = """
import sys
import torch
import torch.nn as nn

def exits():
    sys.exit(0)

def exits_with_a_message():
    sys.exit("bye")

class ExitsInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        if x.shape[0] > 1:  # the harness's one-example probes pass; the evaluation does not
            sys.exit(0)
        return self.net(x)

def exits_in_forward():
    torch.manual_seed(0)  # the same weights on every call: not flagged as untrained
    return ExitsInForward()
"""


@pytest.fixture()
def user_models(tmp_path: Path, monkeypatch) -> str:
    """A module of hostile model factories in the current directory; its name."""
    name = "hostile_models_q6"
    (tmp_path / f"{name}.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # what the console script would have exited with
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(("factory", "words"), [
    ("exits", "sys.exit(0)"),
    ("exits_with_a_message", "sys.exit('bye')"),
    ("exits_in_forward", "sys.exit(0) while it was evaluated"),
])
def test_a_model_that_calls_sys_exit_is_an_error(factory: str, words: str, user_models: str, tmp_path: Path,
                                                 capsys) -> None:
    code, err = _run(["evaluate", "--model", f"{user_models}:{factory}", "--out", str(tmp_path / "out"), *FAST],
                     capsys)
    assert code == 2, err
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_an_exotic_base_exception_is_an_internal_error_not_a_crash(monkeypatch, tmp_path: Path, capsys) -> None:
    class Odd(BaseException):
        pass

    def odd(*args, **kwargs):
        raise Odd("from somewhere deep")

    monkeypatch.setattr(cli.runner, "evaluate", odd)
    code, err = _run(["evaluate", "--out", str(tmp_path / "out"), *FAST], capsys)
    assert code == 3 and "internal error: Odd: from somewhere deep" in err and len(err.splitlines()) == 1


def test_a_run_that_wrote_no_report_never_exits_0(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(cli, "_sweeps", lambda args, dataset: [])  # a bug that would evaluate nothing
    code, err = _run(["evaluate", "--out", str(tmp_path / "out"), *FAST], capsys)
    assert code == 3 and "0 of 0 reports were written" in err


def test_a_sys_exit_outside_the_model_is_an_internal_error(monkeypatch, capsys) -> None:
    def exits(args):
        sys.exit(0)  # a plug-in or library the command ran

    monkeypatch.setattr(cli, "_list", exits)
    code, err = _run(["list", "attacks"], capsys)
    assert code == 3 and "called sys.exit(0)" in err and len(err.splitlines()) == 1


def test_a_model_module_that_exits_on_import_is_an_error(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "exits_on_import_q6.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "exits_on_import_q6", raising=False)
    code, err = _run(["evaluate", "--model", "exits_on_import_q6:make", "--out", str(tmp_path / "out"), *FAST],
                     capsys)
    assert code == 2 and "called sys.exit(0)" in err and "exits_on_import_q6" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
