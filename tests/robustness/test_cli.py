"""The CLI is a thin adapter: every flag must reach the library, errors exit 2 on one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from robustness import cli
from robustness.attacks.base import AttackKind, FixedBudgetAttack
from robustness.model_info import ModelInfo
from robustness.registry import Registry
from robustness.report import Report


def _fake_report(norm: str, worst: float) -> Report:
    return Report(
        clean_accuracy=1.0, robust_accuracy={0.0: 1.0, 0.1: worst}, by_attack={"fgsm": {0.0: 1.0, 0.1: worst}},
        n_examples=4, epsilons=[0.0, 0.1], norm=norm, bounds=(0.0, 1.0), attacks={"fgsm": "FGSM()"}, seed=0,
        batch_size=4, device="cpu", versions={}, timings={"total": 0.1}, max_perturbation={0.1: 0.1},
        num_classes=10,
    )


@pytest.fixture()
def spy(monkeypatch):
    """Record what the CLI passes to the library, without running anything heavy."""
    calls: dict[str, list] = {"data": [], "model": [], "evaluate": []}
    fake_data = SimpleNamespace(name="digits", dataset="DATASET", num_classes=10, input_shape=(1, 8, 8),
                                bounds=(0.0, 1.0), mean=(0.5,), std=(0.3,))
    fake_model = SimpleNamespace(model="MODEL", source="spec", info=ModelInfo(source="spec"), warnings=[])

    def load_dataset(name, **kw):
        calls["data"].append((name, kw))
        return fake_data

    def load_model(spec, **kw):
        calls["model"].append((spec, kw))
        return fake_model

    def evaluate(model, data, *, config):
        calls["evaluate"].append((model, data, config))
        return _fake_report(config.norm, worst=0.4)

    monkeypatch.setattr(cli.datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(cli.loading, "load_model", load_model)
    monkeypatch.setattr(cli.loading, "default_model", lambda: fake_model)
    monkeypatch.setattr(cli.runner, "evaluate", evaluate)
    return calls


def test_every_flag_reaches_the_library(spy, tmp_path, capsys) -> None:
    code = cli.main([
        "evaluate", "--model", "m.pt", "--arch", "small-cnn", "--mean", "0.5", "--std", "0.25",
        "--data", "mnist", "--data-dir", "/d", "--download", "--split", "train", "--attacks", "fgsm,PGD",
        "--eps", "0,8/255,0.1", "--norm", "l2", "--n", "17", "--batch-size", "33", "--device", "cpu",
        "--seed", "5", "--out", str(tmp_path), "--min-accuracy", "0.3", "--quiet", "--strict",
        "--schedule", "bisect", "--state", str(tmp_path / "state"), "--amp", "bf16", "--channels-last", "--compile",
    ])
    assert code == 0
    (name, dkw), = spy["data"]
    assert (name, dkw) == ("mnist", {"split": "train", "data_dir": "/d", "download": True, "n": 17, "seed": 5})
    (spec, mkw), = spy["model"]
    assert spec == "m.pt" and mkw["arch"] == "small-cnn" and mkw["mean"] == [0.5] and mkw["std"] == [0.25]
    assert mkw["input_shape"] == (1, 8, 8)  # the data's: a checkpoint recording another shape refuses it
    (model, data, config), = spy["evaluate"]
    assert model == "MODEL" and data == "DATASET"
    assert config.attacks == ("fgsm", "pgd") and config.norm == "l2" and config.batch_size == 33
    assert config.epsilons == pytest.approx((0.0, 8 / 255, 0.1))
    assert config.device == torch.device("cpu") and config.seed == 5 and config.progress is False
    assert config.strict is True and config.checks is True and config.schedule == "bisect"
    assert config.state == tmp_path / "state" and config.amp == "bf16"
    assert config.channels_last is True and config.compile is True
    cli.main(["evaluate", "--model", "m.pt", "--batch-size", "auto", "--out", str(tmp_path), "--quiet", "--no-checks"])
    assert spy["evaluate"][-1][2].batch_size is None and spy["evaluate"][-1][2].state is None
    assert spy["evaluate"][-1][2].checks is False and spy["evaluate"][-1][2].strict is False
    calls = len(spy["evaluate"])
    assert cli.main(["evaluate", "--model", "m.pt", "--out", str(tmp_path), "--strict", "--no-checks"]) == 2
    assert len(spy["evaluate"]) == calls and "drop one" in capsys.readouterr().err  # a gate that could never fire
    assert json.loads((tmp_path / "report.json").read_text())["norm"] == "l2"


def test_default_runs_linf_and_l2_sweeps_on_both_shipped_models(spy, tmp_path, capsys) -> None:
    assert cli.main(["--out", str(tmp_path)]) == 0
    norms = [config.norm for _, _, config in spy["evaluate"]]
    assert norms == ["linf", "linf", "l2", "l2"]  # standard, then adversarially trained, per sweep
    assert [config.attacks for _, _, config in spy["evaluate"]] == (
        [("fgsm", "pgd", "apgd-ce")] * 2 + [("pgd", "apgd-ce(restarts=2)", "cw")] * 2)
    assert [spec for spec, _ in spy["model"]] == [str(cli.SHIPPED_MODELS["adv-trained"])]
    assert all(config.batch_size is None for _, _, config in spy["evaluate"])  # auto unless asked
    for label in ("standard", "adv-trained"):
        assert (tmp_path / label / "linf" / "report.md").is_file()
        assert (tmp_path / label / "l2" / "robust_accuracy.png").is_file()
    out = capsys.readouterr().out
    assert out.count("| eps | standard | adv-trained |") == 2 and "| 0.1 | 40.0% | 40.0% |" in out


def test_norm_l1_runs_the_l1_attacks_at_the_l1_budgets(spy, tmp_path) -> None:
    assert cli.main(["--norm", "l1", "--out", str(tmp_path), "--quiet"]) == 0
    (_, _, config), = spy["evaluate"][:1]
    assert config.norm == "l1" and config.attacks == ("pgd", "apgd-ce", "apgd-t")
    assert config.epsilons == pytest.approx((0.0, 0.5, 1.0, 2.0, 4.0))  # digits' L1 sweep
    assert cli.main(["--norm", "l1", "--attacks", "standard", "--out", str(tmp_path), "--quiet"]) == 0
    standard = spy["evaluate"][-1][2].named_attacks  # AutoAttack's L1 protocol, its L1 Square included
    assert list(standard) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert standard["apgd-ce"].restarts == 5 and standard["apgd-t"].target_classes == 5
    assert standard["apgd-ce"].stages[0] == (3.0, 30)  # the large-epsilon schedule


def test_norm_l1_refuses_cw_and_warns_at_the_l1_diameter(spy, tmp_path, capsys) -> None:
    assert cli.main(["--norm", "l1", "--attacks", "cw", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cw" in err and "--norm l2" in err and "apgd-ce" in err and "square" in err and "Traceback" not in err
    assert cli.main(["--norm", "l1", "--eps", "0,64", "--out", str(tmp_path), "--quiet"]) == 0
    err = capsys.readouterr().err  # 64 pixels in [0, 1]: the box's L1 diameter is 64
    assert "warning: --eps 64 in L1 is at least the distance between any two inputs" in err and "(64)" in err
    assert cli.main(["--norm", "l1", "--eps", "0,63", "--out", str(tmp_path), "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_norm_l1_end_to_end_on_the_shipped_model(tmp_path, capsys) -> None:
    """A real L1 sweep: the runner, the checks and the report take the norm through."""
    out = tmp_path / "rep"
    assert cli.main(["evaluate", "--model", str(cli.SHIPPED_MODELS["standard"]), "--norm", "l1", "--n", "32",
                     "--attacks", "fgsm,pgd,apgd-ce(steps=10)", "--eps", "0,1,3", "--device", "cpu", "--quiet",
                     "--out", str(out)]) in (0, 1)
    report = json.loads((out / "report.json").read_text())
    assert report["norm"] == "l1"
    worst = {float(k): v for k, v in report["robust_accuracy"].items()}
    assert worst[3.0] < worst[1.0] < worst[0.0]  # the L1 attacks bite, more at the larger budget
    assert all(v <= e * (1 + 1e-5) + 1e-6 for e, v in ((float(k), v) for k, v in report["max_perturbation"].items()))
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks["black-box-vs-white-box"] == "skipped" and checks["full-range-budget"] == "passed"


def test_min_accuracy_gate_exits_1(spy, tmp_path, capsys) -> None:
    assert cli.main(["--eps", "0.1", "--min-accuracy", "0.5", "--out", str(tmp_path), "--quiet"]) == 1
    assert "FAILED --min-accuracy" in capsys.readouterr().out
    assert cli.main(["--eps", "0.1", "--min-accuracy", "0.4", "--out", str(tmp_path), "--quiet"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eps", "abc"], "not a number"),
        (["--eps", "-0.1"], ">= 0"),
        (["--min-accuracy", "3"], "fraction"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
        (["--device", "cpu:1"], "unknown device"),
        (["--eps", "0,1e400"], "give finite numbers"),
        (["--model", "m.pt", "--mean", "0.5", "--std", "1e999"], "too large for a float"),
        (["--attacks", "pgd(loss='margin"], "unclosed string"),
        (["--norm", "l3"], "invalid choice"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, spy, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(cli.main([*argv, "--out", str(tmp_path)]))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_unwritable_output_exits_2_with_one_line(tmp_path, capsys) -> None:
    """An --out or --state under a regular file cannot be created: a one-line error naming it."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for flag in ("--out", "--state"):
        argv = ["--n", "8", "--attacks", "fgsm", "--eps", "0.1", "--no-checks", "--quiet", "--out", str(tmp_path / "o")]
        argv += [flag, str(blocker / "sub")]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert str(blocker / "sub") in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_closed_pipe_ends_quietly(monkeypatch, capsys) -> None:
    """`robustness list attacks | head`: the reader leaves early; no error line, exit 128 + SIGPIPE."""
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_list", broken)
    assert cli.main(["list", "attacks"]) == 141
    assert capsys.readouterr().err == ""


def test_os_error_without_a_path_still_reads_as_one_line(monkeypatch, capsys) -> None:
    def fails(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "_list", fails)
    assert cli.main(["list", "attacks"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "robustness: error: No space left on device (OSError)"


def test_parse_epsilons_accepts_fractions() -> None:
    assert cli.parse_epsilons("0, 2/255,0.5") == pytest.approx([0.0, 2 / 255, 0.5])


def test_end_to_end_subprocess(tmp_path) -> None:
    """The real thing on a small subset: CLI process, shipped model, digits data, report files."""
    out = tmp_path / "rep"
    proc = subprocess.run(
        [sys.executable, "-m", "robustness", "evaluate", "--n", "40", "--attacks", "fgsm,pgd", "--eps", "0,0.1",
         "--out", str(out), "--min-accuracy", "0.0"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for label in ("standard", "adv-trained"):  # no --model: both shipped models, OUT/<model>/<norm>/
        report = json.loads((out / label / "linf" / "report.json").read_text())
        assert report["n_examples"] == 40 and set(report["robust_accuracy"]) == {"0.0", "0.1"}
        assert report["robust_accuracy"]["0.1"] <= report["clean_accuracy"]
        assert (out / label / "linf" / "robust_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "robustness", "--model", str(tmp_path / "none.pt")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


def test_list_attacks(capsys) -> None:
    assert cli.main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert {"fgsm", "pgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "square"} <= set(names)
    assert {"standard", "smoke"} <= set(names) and "art:" in out  # presets and the ART adapter are listed
    table = out.split("\n\n")[0].replace("\n" + " " * 37, " ").splitlines()[1:]  # wrapped settings joined
    rows = {line.split()[0]: line.split(maxsplit=3)[1:] for line in table}
    assert rows["pgd"][:2] == ["linf,l2,l1", "iterative"] and "steps=10, rel_stepsize=None" in rows["pgd"][2]
    assert rows["cw"][:2] == ["l2", "minimization"] and rows["square"][:2] == ["linf,l2,l1", "black-box"]
    assert rows["fgsm"][:2] == ["linf,l2,l1", "single-step"] and rows["fgsm"][2].startswith("loss='ce'")
    assert "eot_samples=1" in rows["fgsm"][2]
    # the L1 form of the standard preset is listed under it
    assert rows["apgd-t"][0] == "linf,l2,l1" and re.search(r"^standard .*\n(?:  .*\n)*  l1 ", out, re.M)


def test_list_attacks_shows_a_plug_ins_settings_and_defaults(monkeypatch, capsys) -> None:
    @dataclass(frozen=True, kw_only=True)
    class Mine(FixedBudgetAttack):
        kind: ClassVar[AttackKind] = "black-box"
        norm: str = "l2"
        radius: float
        tries: int = 7

        def __post_init__(self) -> None:
            if self.norm != "l2":
                raise ValueError("l2 only")

        def _run(self, model, x, y, *, eps, bounds, target, generator):
            return x

    registry = Registry("robustness.tests-no-entry-points", "attack")
    registry.register("mine", lambda **kw: Mine(radius=1.0, **kw))  # a factory: no fields to read
    registry.register("mine-class", Mine)
    monkeypatch.setattr(cli, "ATTACKS", registry)
    assert cli.main(["list", "attacks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # no norms: it cannot be built without its required radius
    assert lines[2].split(maxsplit=3) == ["mine-class", "?", "black-box", "radius (required), tries=7"]
    assert lines[1].split()[:3] == ["mine", "l2", "?"] and "(not a dataclass)" in lines[1]


def test_failed_check_exits_1_and_checks_print_before_the_table(spy, monkeypatch, tmp_path, capsys) -> None:
    from robustness.report import Check

    def evaluate(model, data, *, config):
        report = _fake_report(config.norm, worst=0.4)
        status = "failed" if config.strict else "warning"
        report.checks = [Check("probability-outputs", "passed", "ok"), Check("zero-gradients", status, "masked")]
        return report

    monkeypatch.setattr(cli.runner, "evaluate", evaluate)
    args = ["evaluate", "--model", "m.pt", "--eps", "0.1", "--out", str(tmp_path)]
    assert cli.main(args) == 0  # a warning alone does not fail the run
    out = capsys.readouterr().out
    assert out.index("check warning: zero-gradients: masked") < out.index("| eps |")
    assert "probability-outputs" not in out  # passed checks stay in the report only
    assert cli.main(args + ["--strict"]) == 1
    out = capsys.readouterr().out
    assert "check failed: zero-gradients" in out and "FAILED checks: zero-gradients" in out
    saved = json.loads((tmp_path / "report.json").read_text())["checks"]
    assert [c["status"] for c in saved] == ["failed", "passed"]  # not-passed first
