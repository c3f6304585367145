from __future__ import annotations

import json
import os

import pytest

import robustness
from robustness.report import Report


@pytest.fixture()
def report(trained_model, test_batch) -> Report:
    return robustness.evaluate(trained_model, test_batch, attacks=["fgsm", "pgd"], epsilons=[0, 0.05, 8 / 255],
                               progress=False)


def test_save_writes_json_markdown_and_png(report, tmp_path) -> None:
    out = report.save(tmp_path / "r")
    data = json.loads((out / "report.json").read_text())
    assert set(data["robust_accuracy"]) == {"0.0", "0.05", repr(8 / 255)}
    assert data["robust_accuracy"] == {repr(k): v for k, v in report.robust_accuracy.items()}
    for key in ("clean_accuracy", "by_attack", "n_examples", "seed", "versions", "device", "timings", "norm"):
        assert key in data
    md = (out / "report.md").read_text()
    assert report.table() in md and "worst case" in md
    assert (out / "robust_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(out)) == ["report.json", "report.md", "robust_accuracy.png"]  # no temp files left


def test_json_round_trip(report, tmp_path) -> None:
    report.save(tmp_path)
    back = Report.from_dict(json.loads((tmp_path / "report.json").read_text()))
    assert back.robust_accuracy == report.robust_accuracy
    assert back.by_attack.keys() == report.by_attack.keys()
    assert back.worst_case == report.worst_case


def test_failed_write_keeps_the_previous_report(report, tmp_path, monkeypatch) -> None:
    report.save(tmp_path)
    before = (tmp_path / "report.json").read_text()

    def broken_png(self) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(Report, "plot_png", broken_png)
    report.n_examples += 1
    with pytest.raises(OSError):
        report.save(tmp_path)
    # report.json was replaced whole (new content) or not at all; never a partial file
    text = (tmp_path / "report.json").read_text()
    assert json.loads(text)["n_examples"] in (json.loads(before)["n_examples"], report.n_examples)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_table_has_a_row_per_budget_and_a_column_per_attack(report) -> None:
    lines = report.table().splitlines()
    assert lines[0] == "| eps | worst case | fgsm | pgd |"
    assert len(lines) == 2 + 3


def test_worst_case_is_the_largest_budget(report) -> None:
    assert report.worst_case == report.robust_accuracy[0.05]
