from __future__ import annotations

import json
import os

import pytest

import robustness
from robustness.report import Report


@pytest.fixture()
def report(trained_model, test_batch) -> Report:
    return robustness.evaluate(trained_model, test_batch, attacks=["fgsm", "pgd"], epsilons=[0, 0.05, 8 / 255],
                               progress=False, checks=False)


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
    assert (out / "examples.png").read_bytes()[:4] == b"\x89PNG"
    # no temp files left
    assert sorted(os.listdir(out)) == ["examples.png", "report.json", "report.md", "robust_accuracy.png", "samples.csv"]


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


def test_samples_csv_reproduces_the_report(report, tmp_path) -> None:
    import csv

    report.save(tmp_path)
    rows = list(csv.DictReader((tmp_path / "samples.csv").open()))
    assert len(rows) == report.n_examples
    assert [int(r["index"]) for r in rows] == list(range(report.n_examples))
    assert {"label", "clean_prediction", "broken_at_eps", "broken_by", "adversarial_prediction",
            "perturbation_norm", "broken_at_eps:fgsm", "broken_at_eps:pgd"} <= set(rows[0])
    for eps in (e for e in report.robust_accuracy if e > 0):
        robust = sum(1 for r in rows if r["correct"] == "1" and (r["broken_at_eps"] == "" or
                                                                 float(r["broken_at_eps"]) > eps + 1e-12))
        assert robust / len(rows) == report.robust_accuracy[eps]
    for r in rows:
        if r["broken_at_eps"]:
            assert r["broken_by"] in ("fgsm", "pgd")
            assert r[f"broken_at_eps:{r['broken_by']}"] == r["broken_at_eps"]  # that attack broke it there
            assert int(r["adversarial_prediction"]) != int(r["label"])
            assert float(r["perturbation_norm"]) <= float(r["broken_at_eps"]) + 1e-6
        else:
            assert r["broken_by"] == "" and r["adversarial_prediction"] == ""


def test_examples_are_verified_adversarial_inputs_inside_their_budget(report, trained_model) -> None:
    assert 0 < len(report.examples) <= 8
    for ex in report.examples:
        assert ex["eps"] in report.robust_accuracy
        assert float((ex["adversarial"] - ex["clean"]).abs().max()) <= ex["eps"] + 1e-6
        pred = int(trained_model(ex["adversarial"][None]).argmax(1))
        assert pred == ex["adversarial_prediction"] != ex["label"]
        assert ex["attack"] in report.by_attack


def test_cumulative_per_class_and_costs(report, trained_model, test_batch) -> None:
    names = list(report.by_attack)
    assert report.cumulative[names[0]] == report.by_attack[names[0]]
    assert report.cumulative[names[-1]] == report.robust_accuracy
    n = report.n_examples
    for e in report.robust_accuracy:
        weighted = sum(v["n"] * v["robust"][e] for v in report.per_class.values()) / n
        assert abs(weighted - report.robust_accuracy[e]) < 1e-9
    for name in names:
        for e, st in report.perturbation[name].items():
            assert st["count"] == round((report.clean_accuracy - report.by_attack[name][e]) * n)
            if st["count"]:
                assert st["max"] <= e + 1e-6
    # FGSM: one gradient pass per attacked sample and budget, plus the runner's verification pass
    x, y = test_batch
    correct = int((trained_model(x).argmax(1) == y).sum())
    survivors = round(report.by_attack["fgsm"][8 / 255] * n)  # the smaller budget
    calls = report.model_calls["fgsm"]
    assert calls["gradient_samples"] == correct + survivors
    assert calls["samples"] == 2 * (correct + survivors)
    assert report.model_calls["pgd"]["gradient_samples"] > calls["gradient_samples"]


def test_new_fields_round_trip_through_json(report, tmp_path) -> None:
    report.save(tmp_path)
    back = Report.from_dict(json.loads((tmp_path / "report.json").read_text()))
    assert back.cumulative == report.cumulative
    assert back.per_class == report.per_class
    assert back.model_calls == report.model_calls
    assert back.checks == report.checks_by_severity()
    for name, per_eps in report.perturbation.items():
        assert back.perturbation[name].keys() == per_eps.keys()


def test_markdown_lists_checks_that_did_not_pass_first(report) -> None:
    from robustness.report import Check

    report.checks = [Check("a", "passed", "fine"), Check("b", "warning", "look here"), Check("c", "failed", "bad")]
    md = report.to_markdown()
    assert md.index("Checks that did not pass") < md.index("## Robust accuracy")
    assert md.index("`c`") < md.index("`b`") < md.index("## Robust accuracy")
    assert [c.name for c in report.checks_by_severity()] == ["c", "b", "a"]
    assert "## Per class" in md and "## Cumulative" in md


def test_report_json_writes_null_for_nan_and_inf_and_reads_it_back_as_nan(report, tmp_path) -> None:
    import math

    from robustness.report import Check

    eps = max(report.robust_accuracy)
    report.perturbation["fgsm"][eps] = {"count": 0, "median": math.nan, "max": math.nan}  # nothing broken
    report.max_perturbation[eps] = math.inf
    report.timings["total"] = math.nan
    report.by_attack["pgd"][eps] = math.nan
    report.per_class[0]["clean"] = math.nan
    report.checks = [Check("a", "passed", "fine")]
    report.save(tmp_path)
    text = (tmp_path / "report.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c} in report.json"))
    key = repr(float(eps))
    assert data["perturbation"]["fgsm"][key]["median"] is None and data["max_perturbation"][key] is None
    back = Report.from_dict(data)
    assert math.isnan(back.perturbation["fgsm"][eps]["median"]) and math.isnan(back.perturbation["fgsm"][eps]["max"])
    assert math.isnan(back.max_perturbation[eps])  # inf has no JSON form either: null, read back as NaN
    assert math.isnan(back.timings["total"]) and math.isnan(back.by_attack["pgd"][eps])
    assert math.isnan(back.per_class[0]["clean"])
    assert back.robust_accuracy == report.robust_accuracy
    assert "n/a" in back.to_markdown()  # the markdown of a read-back report renders, NaN as n/a
