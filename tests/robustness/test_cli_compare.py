"""``robustness compare DIR...``: saved reports side by side, the numbers the reports hold, warnings, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import robustness
from robustness import cli
from robustness.cli.compare import compare, find_reports
from robustness.report import Report

EPS = [0.0, 0.1, 0.2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits) -> Path:
    """runs/standard/linf and runs/adv-trained/linf: the shipped models on the same 24 digits, fgsm (fast)."""
    root = tmp_path_factory.mktemp("runs")
    x, y = digits[2][:24], digits[3][:24]
    for name, spec in (("standard", "digits-cnn"), ("adv-trained", "digits-cnn-at")):
        report = robustness.evaluate(robustness.load_model(spec), (x, y), attacks=["fgsm"], epsilons=EPS,
                                     progress=False, checks=False)
        report.data = "digits, test split"
        report.save(root / name / "linf")
    return root


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _load(path: Path) -> Report:
    return Report.from_dict(json.loads(path.read_text()))


def test_the_table_holds_the_reports_numbers_labelled_by_their_folders(runs) -> None:
    result = compare([runs])
    assert list(result.tables) == ["linf"] and result.warnings == [] and result.notes == []
    table = result.tables["linf"]
    assert [r.label for r in result.reports] == ["adv-trained/linf", "standard/linf"]
    assert table.splitlines()[0] == "| | `adv-trained` | `standard` |"  # the norm's folder left out in its table
    rows = _rows(table)
    reports = [_load(runs / "adv-trained" / "linf" / "report.json"), _load(runs / "standard" / "linf" / "report.json")]
    assert rows["clean"] == [f"{100 * r.clean_accuracy:.1f}%" for r in reports]
    for eps in (0.1, 0.2):
        assert rows[f"eps {eps}"] == [f"{100 * r.robust_accuracy[eps]:.1f}%" for r in reports]
    assert rows["worst case (largest budget)"] == [f"{100 * r.worst_case:.1f}% at 0.2" for r in reports]
    assert rows["examples"] == ["24", "24"]
    assert reports[0].worst_case > reports[1].worst_case  # the adversarially trained model is the robust one


def test_cli_prints_the_table_and_writes_compare_md_and_a_png(runs, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = compare([runs]).tables["linf"]
    assert table in printed and table in (out / "compare.md").read_text()
    assert (out / "compare_linf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["compare.md", "compare_linf.png"]


def test_different_data_examples_or_seeds_are_warned(runs, tmp_path) -> None:
    other = tmp_path / "other"
    shutil.copytree(runs / "standard", other / "standard")
    path = other / "standard" / "linf" / "report.json"
    data = json.loads(path.read_text())
    data["data"], data["seed"] = "mnist, test split", 3
    path.write_text(json.dumps(data))
    result = compare([runs / "adv-trained", other])
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert "not comparable sample for sample" in warning and "data differ" in warning and "seeds differ" in warning
    assert "mnist, test split" in warning and "example counts" not in warning


def test_labels_name_the_dir_when_two_dirs_give_the_same_one_and_norm_filters(runs, tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(runs / "standard", a)
    shutil.copytree(runs / "standard", b)
    assert [r.label for r in find_reports([a, b])] == ["a/linf", "b/linf"]
    assert [r.label for r in find_reports([a / "linf"])] == ["linf"]  # a report directly in DIR: the DIR's name
    with pytest.raises(robustness.InputError, match="no report under the directories is l2"):
        compare([a], norm="l2")


def test_corruptions_reports_get_their_own_table(runs, tmp_path) -> None:
    accuracy = {"fog": {"1": 0.8, "2": 0.6}, "snow": {"1": 0.7, "2": 0.4}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps({  # per-severity means written out, as the report does
        "kind": "corruptions", "data": "cifar10-c", "clean_accuracy": 0.9, "n_examples": 20, "seed": 0,
        "per_severity": {"1": 0.75, "2": 0.5}, "mean_accuracy": 0.625, "accuracy": accuracy}))
    (tmp_path / "b" / "report.json").write_text(json.dumps({  # only the accuracy per corruption and severity
        "kind": "corruptions", "data": "cifar10-c", "clean_accuracy": None, "n_examples": 30, "seed": 0,
        "accuracy": {"fog": {"1": 0.5, "2": 0.3}}}))
    result = compare([runs, tmp_path / "a", tmp_path / "b"])
    rows = _rows(result.tables["corruptions"])
    assert rows["1"] == ["75.0%", "50.0%"] and rows["2"] == ["50.0%", "30.0%"] and rows["mean"] == ["62.5%", "40.0%"]
    assert rows["clean"] == ["90.0%", "-"] and rows["examples"] == ["20", "30"] and "linf" in result.tables
    assert any(w.startswith("corruptions: ") and "example counts differ" in w for w in result.warnings)


def test_a_curve_and_published_claims_get_their_rows(runs, digits, tmp_path) -> None:
    x, y = digits[2][:16], digits[3][:16]
    report = robustness.evaluate(robustness.load_model("digits-cnn"), (x, y), attacks=["fmn"],
                                 epsilons=["curve", 0, 0.1], progress=False, checks=False)
    report.data = "digits, test split"
    with pytest.warns(robustness.RobustnessWarning):  # the made-up claim lies far below our number
        report.set_published({"source": "made up", "metric": "autoattack_acc", "clean_accuracy": 0.99,
                              "robust_accuracy": 0.01, "norm": "linf", "eps": 0.1})
    report.save(tmp_path / "curve")
    result = compare([runs / "standard", tmp_path / "curve"])
    rows = _rows(result.tables["linf"])
    assert rows["median distance (curve)"] == ["-", f"{report.curve.median_distance:.4g}"]
    assert rows["published clean"] == ["-", "99.0%"] and rows["published robust"] == ["-", "1.0% at 0.1"]
    assert rows["eps 0.2"] == [rows["eps 0.2"][0], "-"]  # a budget the curve run did not list
    assert "example counts differ" in result.warnings[0] and "attack settings differ" in result.warnings[0]


@pytest.mark.parametrize("case", ["missing", "empty", "not json", "not a report"])
def test_bad_directories_exit_2_with_one_line(case, tmp_path, capsys) -> None:
    d = tmp_path / "d"
    if case != "missing":
        d.mkdir()
    if case == "not json":
        (d / "report.json").write_text("{not json")
    if case == "not a report":
        (d / "report.json").write_text('{"hello": 1}')
    assert cli.main(["compare", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("robustness: error: compare: ")
    assert {"missing": "does not exist", "empty": "no report.json", "not json": "not valid JSON",
            "not a report": "not a robustness report"}[case] in err
