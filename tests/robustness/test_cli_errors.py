"""What a review of `robustness evaluate` / `robustness list` found: flags checked before any work
(and before --nproc launches workers), messages in the CLI's words, exit codes that never say
"gate failed" for a crash, budgets printed so that rows differ, and discoverable commands.

Most tests stub the library (``runner.evaluate``, ``load_model``, ``load_dataset``) so that they
check the CLI alone and run in milliseconds; one runs a subprocess as the console script does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest

from robustness import cli
from robustness.distributed import CollectiveError
from robustness.errors import RobustnessWarning
from robustness.model_info import ModelInfo
from robustness.report import Check, Report, eps_labels


def _report(epsilons: list[float], norm: str = "linf", checks: list[Check] | None = None) -> Report:
    acc = {e: 1.0 - e for e in epsilons}
    return Report(
        clean_accuracy=1.0, robust_accuracy=acc, by_attack={"fgsm": dict(acc)}, n_examples=4, epsilons=epsilons,
        norm=norm, bounds=(0.0, 1.0), attacks={"fgsm": "FGSM()"}, seed=0, batch_size=4, device="cpu",
        versions={}, timings={"total": 0.1}, max_perturbation={e: e for e in epsilons if e}, num_classes=10,
        checks=checks or [],
    )


@pytest.fixture()
def stub(monkeypatch):
    """The CLI with the library stubbed: records what it is asked to load, evaluate and launch."""
    calls: dict[str, list] = {"model": [], "evaluate": [], "relaunch": []}
    data = SimpleNamespace(name="digits", dataset="DATA", num_classes=10, input_shape=(1, 8, 8), bounds=(0.0, 1.0))
    model = SimpleNamespace(model="MODEL", source="m.pt", info=ModelInfo(source="m.pt"), warnings=[])

    def load_model(spec, **kw):
        calls["model"].append(spec)
        return model

    def evaluate(model, dataset, *, config):
        calls["evaluate"].append(config)
        return _report(list(config.epsilons), config.norm)

    def relaunch(argv, nproc):
        calls["relaunch"].append((argv, nproc))
        return 0

    import robustness.cli.launch

    monkeypatch.setattr(cli.datasets, "load_dataset", lambda name, **kw: data)
    monkeypatch.setattr(cli.loading, "load_model", load_model)
    monkeypatch.setattr(cli.loading, "default_model", lambda: model)
    monkeypatch.setattr(cli.runner, "evaluate", evaluate)
    monkeypatch.setattr(robustness.cli.launch, "relaunch", relaunch)
    return calls


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# 1. attack settings keep their case; quotes protect parentheses and commas ------------------------

def test_parentheses_and_commas_inside_quoted_settings_belong_to_the_string() -> None:
    assert cli.split_attack_list("PGD(random_start=False, loss='a(b,c'),FGSM") == [
        "pgd(random_start=False, loss='a(b,c')", "fgsm"]
    assert cli.split_attack_list(r"""pgd(x="it's", y='q\'(' ),fgsm""") == [r"""pgd(x="it's", y='q\'(' )""", "fgsm"]
    with pytest.raises(cli.InputError, match="unclosed string"):
        cli.split_attack_list("pgd(loss='margin)")


# 2. crashes never exit 1; flags that would crash are input errors --------------------------------

@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "cpu:3"], "unknown device 'cpu:3'"),
    (["--device", "meta"], "unknown device 'meta'"),
    (["--mean", "1e400", "--std", "1"], "--mean: '1e400' is too large for a float"),
    (["--mean", "0.5", "--std", "1/0"], "--std: '1/0' is not a number"),
])
def test_flags_that_would_crash_exit_2_on_one_line(flags, message, stub, tmp_path, capsys) -> None:
    code, _, err = _run(["evaluate", "--model", "m.pt", "--out", str(tmp_path), "--quiet", *flags], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert stub["evaluate"] == [] and stub["model"] == []  # refused before anything was loaded


def test_a_lost_rank_is_not_the_gate_code_and_debug_works_before_the_command(monkeypatch, tmp_path, capsys) -> None:
    def lost(args):
        raise CollectiveError("rank 0 lost the other ranks while gathering")

    monkeypatch.setattr(cli, "_evaluate", lost)
    code, _, err = _run(["evaluate", "--out", str(tmp_path)], capsys)
    assert code == 3 and "lost the other ranks" in err
    monkeypatch.setattr(cli, "_list", lambda args: 1 / 0)
    assert _run(["list", "attacks"], capsys)[0] == 3
    with pytest.raises(ZeroDivisionError):  # `--debug` given before the command re-raises too
        cli.main(["--debug", "list", "attacks"])


# 3. --out before any work; the table is printed before the files are written ----------------------

def test_the_table_is_printed_even_when_saving_fails(stub, monkeypatch, tmp_path, capsys) -> None:
    def full_disk(self, directory):
        raise OSError(28, "No space left on device", str(directory))

    monkeypatch.setattr(Report, "save", full_disk)
    code, out, err = _run(["evaluate", "--model", "m.pt", "--eps", "0,0.1", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "No space left" in err
    assert "| 0.1 |" in out and "worst case at eps=0.1" in out  # the results reached the terminal


# 5. --strict needs the checks -----------------------------------------------------------------------

def test_strict_without_checks_is_a_usage_error(stub, tmp_path, capsys) -> None:
    code, _, err = _run(["evaluate", "--model", "m.pt", "--out", str(tmp_path), "--strict", "--no-checks"], capsys)
    assert code == 2 and "--strict needs the sanity checks" in err and stub["evaluate"] == []


# 6. --quiet still counts the check warnings; Python warnings print once on one line -----------------

def test_quiet_counts_check_warnings_and_python_warnings_print_once(stub, monkeypatch, tmp_path, capsys) -> None:
    def evaluate(model, dataset, **kw):
        warnings.warn("the model is in training mode", RobustnessWarning)
        warnings.warn("the model is in training mode", RobustnessWarning)  # another line, same text
        return _report([0.0, 0.1], checks=[Check("convergence", "warning", "a"), Check("black-box", "warning", "b"),
                                           Check("zero-gradients", "passed", "ok")])

    monkeypatch.setattr(cli.runner, "evaluate", evaluate)
    code, out, err = _run(["evaluate", "--model", "m.pt", "--eps", "0,0.1", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "2 check warnings: convergence, black-box (see report.md)" in out and "zero-gradients" not in out
    assert err.count("warning: the model is in training mode") == 1
    assert "RobustnessWarning" not in err and "warnings.warn" not in err


# 7. messages in the CLI's words; --nproc checks the flags before it launches -----------------------

def test_an_l2_attack_in_an_linf_sweep_says_which_flag_to_add(stub, tmp_path, capsys) -> None:
    code, _, err = _run(["evaluate", "--model", "m.pt", "--attacks", "fgsm,cw", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--norm l2" in err and "norm='l2'" not in err and "(the default --norm)" in err
    assert stub["model"] == [] and stub["evaluate"] == []
    code, _, err = _run(["evaluate", "--model", "m.pt", "--attacks", "cw", "--norm", "l2", "--eps", "0,1",
                         "--out", str(tmp_path)], capsys)
    assert code == 0 and stub["evaluate"][-1].attacks == ("cw",)


@pytest.mark.parametrize(("flags", "message"), [
    (["--model", "m.pt", "--mean", "0.3"], "--mean and --std go together"),
    (["--model", "m.pt", "--std", "0.3"], "--mean and --std go together"),
    (["--mean", "0.3", "--std", "0.2"], "--arch, --mean and --std describe a --model"),  # shipped models
])
def test_normalization_flags_are_named_and_checked_first(flags, message, stub, tmp_path, capsys) -> None:
    code, _, err = _run(["evaluate", *flags, "--out", str(tmp_path)], capsys)
    assert code == 2 and message in err and stub["model"] == []


@pytest.mark.parametrize(("flags", "message"), [
    (["--attacks", "pgdd"], "did you mean 'pgd'"),
    (["--attacks", "pgd(stepz=5)"], "did you mean 'steps'"),
    (["--eps", "0,x"], "not a number"),
    (["--min-accuracy", "2"], "fraction"),
])
def test_nproc_checks_the_flags_before_launching_workers(flags, message, stub, tmp_path, capsys) -> None:
    code, _, err = _run(["evaluate", "--nproc", "2", "--model", "m.pt", *flags, "--out", str(tmp_path)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert stub["relaunch"] == []
    afile = tmp_path / "afile"
    afile.write_text("hi")
    code, _, err = _run(["evaluate", "--nproc", "2", "--model", "m.pt", "--out", str(afile)], capsys)
    assert code == 2 and "is a file" in err and stub["relaunch"] == []
    assert _run(["evaluate", "--nproc", "2", "--model", "m.pt", "--out", str(tmp_path)], capsys)[0] == 0
    assert len(stub["relaunch"]) == 1


# 8. a factory next to the user's files, run as the console script runs (no cwd on sys.path) --------

@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P (no cwd on sys.path) is 3.11+")
def test_a_factory_in_the_current_directory_imports_without_cwd_on_sys_path(tmp_path) -> None:
    (tmp_path / "user_models_q8.py").write_text(
        "import torch.nn as nn\n"
        "def make(num_classes=10):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
        "def broken():\n    raise ValueError('bad config')\n")
    base = [sys.executable, "-P", "-m", "robustness", "evaluate", "--n", "8", "--attacks", "fgsm", "--eps", "0,0.1",
            "--no-checks", "--quiet", "--out", "out"]  # -P: like a console script, the cwd is not on sys.path
    ok = subprocess.run([*base, "--model", "user_models_q8:make"], cwd=tmp_path, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "report.json").is_file()
    bad = subprocess.run([*base, "--model", "user_models_q8:broken"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "user_models_q8:broken" in bad.stderr and "bad config" in bad.stderr
    assert "Traceback" not in bad.stderr


# 9. budgets that cover the whole input range ----------------------------------------------------

def test_an_l2_budget_beyond_the_input_diameter_warns_once(stub, tmp_path, capsys) -> None:
    code, _, err = _run(["evaluate", "--model", "m.pt", "--norm", "l2", "--eps", "0,9", "--out", str(tmp_path),
                         "--quiet"], capsys)  # 1x8x8 inputs in [0, 1]: no two lie more than 8 apart
    lines = [ln for ln in err.splitlines() if "--eps 9 in L2" in ln]
    assert code == 0 and len(lines) == 1 and lines[0].startswith("warning: ") and "255" in lines[0]
    _, _, err = _run(["evaluate", "--model", "m.pt", "--norm", "l2", "--eps", "0,7", "--out", str(tmp_path),
                      "--quiet"], capsys)
    assert "in L2" not in err


# 10. budgets print with the digits that tell them apart ----------------------------------------

def test_budgets_that_round_alike_get_enough_digits(stub, tmp_path, capsys) -> None:
    code, out, _ = _run(["evaluate", "--model", "m.pt", "--eps", "0,0.1,0.1000001", "--out", str(tmp_path)], capsys)
    assert code == 0
    rows = [ln.split("|")[1].strip() for ln in out.splitlines() if ln.startswith("| 0")]
    assert rows == ["0", "0.1", "0.1000001"] and "worst case at eps=0.1000001" in out
    assert eps_labels([8 / 255, 0.3]) == {8 / 255: "0.0313725", 0.3: "0.3"}  # the short form when it suffices
    near = Report(  # the report's own table and markdown tell the budgets apart too
        clean_accuracy=1.0, robust_accuracy={0.0: 1.0, 0.1: 0.5, 0.1000001: 0.4},
        by_attack={"fgsm": {0.0: 1.0, 0.1: 0.5, 0.1000001: 0.4}}, n_examples=4, epsilons=[0.0, 0.1, 0.1000001],
        norm="linf", bounds=(0.0, 1.0), attacks={"fgsm": "FGSM()"}, seed=0, batch_size=4, device="cpu",
        versions={}, timings={"total": 0.1}, max_perturbation={0.1: 0.1, 0.1000001: 0.1000001}, num_classes=10)
    for text in (near.table(), near.to_markdown()):
        assert "| 0.1000001 |" in text and "| 0.1 |" in text
    code, out, _ = _run(["--eps", "0,0.1,0.1000001", "--out", str(tmp_path)], capsys)  # both shipped models
    assert code == 0 and "| 0.1000001 |" in out and "| 0.1 |" in out


# 11. discoverability ----------------------------------------------------------------------------

def test_list_attacks_shows_the_norms_each_supports(capsys) -> None:
    assert cli.main(["list", "attacks"]) == 0
    rows = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines() if len(ln.split()) > 1}
    assert rows["cw"] == "l2" and rows["pgd"] == "linf,l2,l1" and rows["fgsm"] == "linf,l2,l1"
    assert rows["square"] == "linf,l2,l1" and rows["apgd-ce"] == "linf,l2,l1"


def test_help_shows_the_version_flag_and_misspelt_commands_get_a_suggestion(capsys) -> None:
    assert cli.main(["--help"]) == 0
    assert "--version" in capsys.readouterr().out
    code, _, err = _run(["evalute"], capsys)
    assert code == 2 and "did you mean 'evaluate'?" in err
    code, _, err = _run(["list", "attack"], capsys)
    assert code == 2 and "did you mean 'attacks'?" in err


def test_norm_is_case_insensitive(stub, tmp_path, capsys) -> None:
    code, _, _ = _run(["evaluate", "--model", "m.pt", "--norm", "L2", "--eps", "0,1", "--out", str(tmp_path)], capsys)
    assert code == 0 and stub["evaluate"][-1].norm == "l2"



# 12. budgets typed as fractions print as typed; report.json keeps the floats beside them -------

def test_budgets_typed_as_fractions_keep_their_form(tmp_path, capsys) -> None:
    code, out, _ = _run(["--eps", "0,1/10,3/10", "--attacks", "fgsm", "--n", "16", "--no-checks",
                         "--out", str(tmp_path)], capsys)  # both shipped models, side by side
    assert code == 0
    rows = [ln.split("|")[1].strip() for ln in out.splitlines() if ln.startswith("| ") and "eps" not in ln]
    assert rows == ["0", "1/10", "3/10"] and "worst case at eps=3/10" in out
    report_dir = tmp_path / "standard" / "linf"
    assert "| 3/10 |" in (report_dir / "report.md").read_text()
    assert "3/10" in (report_dir / "samples.csv").read_text()  # the budget that broke each example
    data = json.loads((report_dir / "report.json").read_text())
    assert data["epsilons"] == [0.0, 0.1, 0.3] and set(data["robust_accuracy"]) == {"0.0", "0.1", "0.3"}
    assert data["epsilon_labels"] == {"0.1": "1/10", "0.3": "3/10"}
    assert Report.from_dict(data).eps_label(0.3) == "3/10"
    del data["epsilon_labels"]  # a report written before the labels existed
    assert Report.from_dict(data).eps_label(0.3) == "0.3"


# 13. --out is checked by writing into it, not by its permission bits (root passes those) ------

def test_an_out_that_permission_bits_call_writable_is_still_checked_before_any_work(stub, monkeypatch, capsys) -> None:
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)  # what root sees, even on /proc
    code, _, err = _run(["evaluate", "--model", "m.pt", "--out", "/proc/self/robustness-report"], capsys)
    assert code == 2 and "cannot create files in /proc/self" in err and len(err.strip().splitlines()) == 1
    assert stub["model"] == [] and stub["evaluate"] == []


# 14. ART's log lines and the loader's notes show only with --verbose -----------------------------

FACTORY = ("import torch\nfrom robustness import loading\n"
           "def make():  # takes no num_classes: the loader notes that it does not pass it\n"
           "    return loading.default_model().model\n")


def test_library_logs_show_only_with_verbose(tmp_path, monkeypatch, caplog) -> None:
    (tmp_path / "quiet_models_q16.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    for name in ("art", "robustness"):  # main sets both; leave them as they were for the other tests
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    caplog.set_level(logging.INFO)  # the root level `robustness evaluate` sets without --quiet ...
    caplog.handler.setLevel(logging.NOTSET)  # ... and its handler's, which passes what the loggers let through
    argv = ["evaluate", "--model", "quiet_models_q16:make", "--attacks", "art:FastGradientMethod", "--eps", "0,0.1",
            "--n", "8", "--no-checks", "--out", str(tmp_path / "out")]
    for verbose in (True, False):
        caplog.clear()
        assert cli.main([*argv, *(["--verbose"] if verbose else [])]) == 0
        from_art = [r.getMessage() for r in caplog.records if r.name.startswith("art")]
        notes = [r.getMessage() for r in caplog.records if "does not take num_classes" in r.getMessage()]
        assert bool(from_art) is verbose and bool(notes) is verbose, (verbose, from_art, notes)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P (no cwd on sys.path) is 3.11+")
def test_a_real_run_with_an_art_attack_prints_no_library_lines(tmp_path) -> None:
    (tmp_path / "quiet_models_q16.py").write_text(FACTORY)
    proc = subprocess.run([sys.executable, "-P", "-m", "robustness", "evaluate", "--model", "quiet_models_q16:make",
                           "--attacks", "art:FastGradientMethod", "--eps", "0,0.1", "--n", "8", "--no-checks",
                           "--out", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for text in ("ART_DATA_PATH", "Inferred", "does not take"):
        assert text not in proc.stdout + proc.stderr
    assert "worst case at eps=0.1" in proc.stdout
