"""What a user of `robustness evaluate` runs into: attack settings written as in Python, small
data files, exit codes that tell a crash from a failed gate, --out checked before the work,
standard JSON, one-line warnings, factories next to the user's script, and discoverable help."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import robustness
from robustness import cli, loading
from robustness.datasets import load_dataset, to_tensors
from robustness.errors import InputError
from robustness.report import Check, Report

FAST = ["--n", "8", "--attacks", "fgsm", "--eps", "0,0.1", "--quiet"]


@pytest.fixture(scope="module")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    return to_tensors(load_dataset("digits", split="test").dataset)


def _shipped() -> str:
    return str(cli.SHIPPED_MODELS["standard"])


def test_attack_settings_keep_their_case_and_misspellings_get_a_suggestion(digits_test) -> None:
    assert cli.split_attack_list("PGD(random_start=False),FGSM") == ["pgd(random_start=False)", "fgsm"]
    x, y = digits_test[0][:8], digits_test[1][:8]
    model = loading.default_model().model
    report = robustness.evaluate(model, (x, y), attacks=["PGD(random_start=False, steps=2)"], epsilons=[0.1],
                                 progress=False, checks=False)
    (described,) = report.attacks.values()
    assert "random_start=False" in described and "steps=2" in described
    with pytest.raises(InputError, match=r"unknown attack 'pgdd' \(did you mean 'pgd'\?\)"):
        robustness.evaluate(model, (x, y), attacks=["pgdd"], epsilons=[0.1], progress=False)
    with pytest.raises(InputError, match=r"stepz.*\(did you mean 'steps'\?\)"):
        robustness.evaluate(model, (x, y), attacks=["pgd(stepz=5)"], epsilons=[0.1], progress=False)


def test_a_data_file_with_a_few_of_the_models_classes_evaluates(digits_test, tmp_path, capsys) -> None:
    x, y = digits_test
    keep = y < 5
    np.savez(tmp_path / "few.npz", x=x[keep][:12].numpy(), y=y[keep][:12].numpy())  # labels 0..4 only
    assert cli.main(["evaluate", "--model", _shipped(), "--data", str(tmp_path / "few.npz"), "--out",
                     str(tmp_path / "out"), *FAST]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["num_classes"] == 10 and report["n_examples"] == 8 and report["data"].endswith("few.npz")
    np.savez(tmp_path / "bad.npz", x=x[:4].numpy(), y=np.array([0, 1, 2, 12]))
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", _shipped(), "--data", str(tmp_path / "bad.npz"), "--out",
                     str(tmp_path / "out2"), *FAST]) == 2
    assert "labels up to 12 but the model" in capsys.readouterr().err


def test_report_json_is_standard_json_and_reads_back(digits_test, tmp_path) -> None:
    x, y = digits_test[0][:8], digits_test[1][:8]
    report = robustness.evaluate(loading.default_model().model, (x, y), attacks=["fgsm"], epsilons=[1e-9],
                                 progress=False, checks=False)  # nothing breaks: the perturbation stats are NaN
    assert math.isnan(report.perturbation["fgsm"][1e-9]["median"])
    report.save(tmp_path)
    text = (tmp_path / "report.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["perturbation"]["fgsm"]["1e-09"]["median"] is None
    back = Report.from_dict(data)
    assert math.isnan(back.perturbation["fgsm"][1e-9]["median"])


@pytest.mark.parametrize(("flags", "message"), [
    (["--seed", "-1"], "a seed must lie in [0, 2**63)"),
    (["--seed", "99999999999999999999"], "a seed must lie in [0, 2**63)"),
    (["--eps", "0,1e400"], "give finite numbers"),
    (["--device", "meta"], "unknown device 'meta'"),
    (["--strict", "--no-checks"], "drop one"),
])
def test_bad_flags_exit_2_with_one_line(flags, message, tmp_path, capsys) -> None:
    argv = ["evaluate", "--out", str(tmp_path), "--n", "8", "--attacks", "fgsm", "--quiet"]
    code = None
    try:
        code = cli.main([*argv, *[f for f in flags if f not in argv]])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_internal_error_exits_3_not_the_gate_code_and_debug_shows_it(monkeypatch, tmp_path, capsys) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(cli.runner, "evaluate", broken)
    assert cli.main(["evaluate", "--out", str(tmp_path), *FAST]) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: something nobody foresaw" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        cli.main(["evaluate", "--out", str(tmp_path), "--debug", *FAST])


def test_out_is_checked_before_any_work(monkeypatch, tmp_path, capsys) -> None:
    calls = []
    monkeypatch.setattr(cli.runner, "evaluate", lambda *a, **k: calls.append(1))
    afile = tmp_path / "afile"
    afile.write_text("hi")
    assert cli.main(["evaluate", "--out", str(afile), *FAST]) == 2
    assert calls == [] and "is a file, not a directory" in capsys.readouterr().err


def test_a_rerun_leaves_no_stale_files_of_the_previous_report(tmp_path) -> None:
    out = tmp_path / "rep"
    assert cli.main(["evaluate", "--model", _shipped(), "--out", str(out), "--n", "8", "--attacks", "fgsm",
                     "--eps", "0,0.3", "--quiet"]) == 0
    assert (out / "examples.png").exists()
    assert cli.main(["evaluate", "--model", _shipped(), "--out", str(out), "--n", "8", "--attacks", "fgsm",
                     "--eps", "0", "--quiet"]) == 0
    assert json.loads((out / "report.json").read_text())["examples"] == []
    assert not (out / "examples.png").exists()


def test_the_quiet_summary_names_check_warnings(tmp_path) -> None:
    report = Report(
        clean_accuracy=1.0, robust_accuracy={0.0: 1.0, 0.1: 0.5}, by_attack={"fgsm": {0.0: 1.0, 0.1: 0.5}},
        n_examples=4, epsilons=[0.0, 0.1], norm="linf", bounds=(0.0, 1.0), attacks={"fgsm": "FGSM()"}, seed=0,
        batch_size=4, device="cpu", versions={}, timings={"total": 0.1}, max_perturbation={0.1: 0.1},
        num_classes=10, checks=[Check("convergence", "warning", "more steps break more"),
                                Check("zero-gradients", "passed", "ok")],
    )
    args = cli.build_parser().parse_args(["evaluate", "--quiet"])
    line = cli._summary_line(report, tmp_path, args, gate=False)
    assert "check warning: convergence (see report.md)" in line and "zero-gradients" not in line


def test_warnings_print_once_on_one_line_and_a_whole_range_linf_budget_warns(tmp_path, capsys) -> None:
    assert cli.main(["evaluate", "--model", _shipped(), "--out", str(tmp_path), "--n", "8", "--attacks", "fgsm",
                     "--eps", "0,8", "--quiet"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "covers the whole input range" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: --eps 8 in Linf") and "8/255" in lines[0]
    assert "RobustnessWarning" not in err and "warnings.warn" not in err  # not Python's two-line format


def test_a_factory_next_to_the_users_script_is_found_and_its_errors_are_one_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_models_xyz.py").write_text(
        "import torch.nn as nn\n"
        "def make(num_classes=10):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
        "def broken():\n    raise ValueError('bad config')\n")
    monkeypatch.chdir(tmp_path)
    loaded = loading.load_model("my_models_xyz:make", num_classes=10)
    assert loaded.model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(InputError, match=r"calling my_models_xyz:broken\(\) failed: ValueError: bad config"):
        loading.load_model("my_models_xyz:broken")
    with pytest.raises(InputError, match="PYTHONPATH"):
        loading.load_model("no_such_module_xyz:make")


def test_help_lists_the_commands_and_version_prints(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("evaluate", "train", "list")) and "3 internal error" in out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("robustness ")


@pytest.mark.parametrize(("name", "message"), [
    ("nhwc.npz", "looks channels-last"),
    ("nan.npz", "contains NaN or inf values"),
    ("arrays.pt", "holds NumPy arrays"),
])
def test_data_file_mistakes_get_one_line_that_says_what_to_do(name, message, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(4)
    path = tmp_path / name
    if name == "nhwc.npz":
        np.savez(path, x=rng.random((4, 8, 8, 1), dtype=np.float32), y=y)
    elif name == "nan.npz":
        x = rng.random((4, 1, 8, 8), dtype=np.float32)
        x[1, 0, 2, 3] = np.nan
        np.savez(path, x=x, y=y)
    else:
        torch.save({"x": rng.random((4, 1, 8, 8), dtype=np.float32), "y": y}, path)
    assert cli.main(["evaluate", "--data", str(path), "--out", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
