"""``--format robustbench``: the RobustBench leaderboard entry, its footnote where the run is not the protocol."""

from __future__ import annotations

import json

import pytest
import torch

import robustness
from robustness import cli
from robustness.config import EvalConfig
from robustness.errors import InputError
from robustness.leaderboard_entry import FILENAME, robustbench_entry, write_robustbench
from robustness.model_info import ModelInfo
from robustness.report import Check, Report

#: the fields of RobustBench's model_info JSON (its leaderboard template), in its order
FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue", "architecture",
          "eps", "clean_acc", "reported", "autoattack_acc", "footnote"]


def _standard(norm: str) -> dict[str, str]:
    return EvalConfig(attacks="standard", epsilons=[0.0], norm=norm).attack_descriptions()


def _report(norm: str = "linf", eps: float = 8 / 255, *, data: str = "cifar10, test split", n: int = 10_000,
            attacks: dict[str, str] | None = None, clean: float = 0.8969, robust: float = 0.5953) -> Report:
    return Report(
        clean_accuracy=clean, robust_accuracy={0.0: clean, eps: robust}, by_attack={}, n_examples=n,
        epsilons=[0.0, eps], norm=norm, bounds=(0.0, 1.0), attacks=_standard(norm) if attacks is None else attacks,
        seed=0, batch_size=500, device="cpu", versions={}, timings={"total": 1.0}, max_perturbation={eps: eps},
        num_classes=10, data=data,
        model=ModelInfo(source="robustbench:Carmon2019Unlabeled", arch="WideResNet-28-10", name="Carmon2019Unlabeled"))


def test_a_standard_linf_run_at_8_255_is_a_clean_entry() -> None:
    entry, problems = robustbench_entry(_report())
    assert problems == [] and list(entry) == FIELDS
    assert entry["dataset"] == "cifar10" and entry["eps"] == "8/255" and entry["architecture"] == "WideResNet-28-10"
    assert entry["clean_acc"] == "89.69" and entry["autoattack_acc"] == "59.53" and entry["footnote"] is None
    assert entry["number_forward_passes"] == 1
    assert all(entry[k] is None for k in ("link", "name", "authors", "venue", "additional_data", "reported"))


def test_l2_and_imagenet_take_their_leaderboards_budgets() -> None:
    entry, problems = robustbench_entry(_report("l2", 0.5, robust=0.7291))
    assert problems == [] and entry["eps"] == "0.5" and entry["autoattack_acc"] == "72.91"
    entry, problems = robustbench_entry(_report(eps=4 / 255, data="imagenet val (RobustBench 5,000-image subset)",
                                                n=5000))
    assert problems == [] and entry["dataset"] == "imagenet" and entry["eps"] == "4/255"


def test_a_non_standard_run_is_written_with_warnings_and_a_footnote() -> None:
    report = _report(eps=0.1, n=500, attacks={"fgsm": "FGSM(norm='linf')"})
    report.checks = [Check("monotone", "warning", "accuracy rose with the budget")]
    entry, problems = robustbench_entry(report)
    assert len(problems) == 4
    assert "not the leaderboard's 8/255" in problems[0] and "--eps 0,8/255" in problems[0]
    assert "not AutoAttack's standard version" in problems[1] and "fgsm" in problems[1]
    assert "fewer than the leaderboard's 10,000" in problems[2]
    assert "monotone" in problems[3]
    assert entry["footnote"].startswith("Not RobustBench's protocol: ")
    assert all(p in entry["footnote"] for p in problems)
    assert entry["eps"] == "0.1" and entry["autoattack_acc"] == "59.53"  # the largest budget, as measured


def test_the_leaderboards_budget_is_taken_from_a_sweep_and_extra_attacks_are_named() -> None:
    report = _report(attacks={**_standard("linf"), "cw": "CW()"})
    report.robust_accuracy = {0.0: 0.8969, 4 / 255: 0.7, 8 / 255: 0.5953, 16 / 255: 0.2}
    entry, problems = robustbench_entry(report)
    assert entry["eps"] == "8/255" and entry["autoattack_acc"] == "59.53"
    assert len(problems) == 1 and "beyond AutoAttack's standard version" in problems[0] and "cw" in problems[0]


def test_data_without_a_leaderboard_is_warned() -> None:
    entry, problems = robustbench_entry(_report(data="digits, test split", n=450))
    assert entry["dataset"] == "digits" and any("no leaderboard for digits" in p for p in problems)


def test_norm_l1_and_a_run_without_a_budget_are_refused() -> None:
    with pytest.raises(InputError, match="ranks Linf and L2 robustness .*not l1"):
        robustbench_entry(_report("l1", 12.0))
    report = _report()
    report.robust_accuracy = {0.0: 0.9}
    with pytest.raises(InputError, match="needs a budget above 0"):
        robustbench_entry(report)


def test_write_robustbench_writes_the_json_atomically(tmp_path) -> None:
    path, problems = write_robustbench(_report(), tmp_path)
    assert path == tmp_path / FILENAME and problems == []
    assert json.loads(path.read_text())["autoattack_acc"] == "59.53"
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILENAME]  # no temporary file left


def test_cli_refuses_format_robustbench_for_l1_before_any_work(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--model", "digits-cnn", "--norm", "l1", "--attacks", "pgd", "--eps", "0,1",
                     "--format", "robustbench", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "not l1" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_cli_writes_robustbench_json_beside_the_report(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--model", "digits-cnn", "--attacks", "fgsm", "--eps", "0,8/255", "--n", "16",
                     "--no-checks", "--format", "robustbench", "--out", str(out)])
    shown = capsys.readouterr()
    assert code == 0 and "robustbench entry" in shown.out
    assert "warning: robustbench.json: the attacks (fgsm) are not AutoAttack's standard version" in shown.err
    entry = json.loads((out / FILENAME).read_text())
    report = json.loads((out / "report.json").read_text())
    assert entry["clean_acc"] == f"{100 * report['clean_accuracy']:.2f}"
    assert entry["autoattack_acc"] == f"{100 * report['robust_accuracy'][repr(8 / 255)]:.2f}"
    assert entry["eps"] == "8/255" and "not AutoAttack's standard version" in entry["footnote"]


def test_a_real_standard_run_is_recognised_as_the_protocol() -> None:
    model = robustness.load_model("digits-cnn")
    x = torch.zeros(4, 1, 8, 8)
    with torch.no_grad():
        y = (model(x).argmax(1) + 1) % 10  # every example misclassified: no attack needs to run, fast
    report = robustness.evaluate(model, (x, y), attacks="standard", epsilons=[0, 8 / 255], progress=False,
                                 checks=False)
    report.data = "cifar10, test split"
    _, problems = robustbench_entry(report)
    assert len(problems) == 1 and "fewer than the leaderboard's 10,000" in problems[0]  # the attacks are standard
