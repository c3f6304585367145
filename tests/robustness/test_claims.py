"""Published numbers beside ours: the differences, the interval, the two loud warnings, the report's block."""

from __future__ import annotations

import json
import math

import pytest

import robustness
from robustness.claims import (CLEAN_BELOW, ROBUST_ABOVE, budget_text, published_comparison, published_markdown,
                               wilson_interval)
from robustness.errors import RobustnessWarning
from robustness.model_info import ModelInfo
from robustness.report import Report

EPS = 8 / 255
CLAIMS = {"source": "RobustBench leaderboard (test)", "metric": "autoattack_acc", "clean_accuracy": 0.8969,
          "robust_accuracy": 0.5953, "norm": "linf", "eps": EPS}


def _compare(clean: float, robust: float, n: int, claims: dict | None = None, norm: str = "linf",
             budgets: tuple[float, ...] = (0.0, EPS)) -> dict:
    return published_comparison(CLAIMS if claims is None else claims, clean_accuracy=clean,
                                robust_accuracy={e: (clean if e == 0 else robust) for e in budgets}, norm=norm,
                                epsilons=list(budgets), n_examples=n)


def test_wilson_interval_matches_known_values_and_stays_in_0_1() -> None:
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0.0, 50)[0] == 0.0 and 0 < wilson_interval(0.0, 50)[1] < 0.08
    assert wilson_interval(1.0, 50)[1] == 1.0 and 0.92 < wilson_interval(1.0, 50)[0] < 1.0
    assert wilson_interval(0.3, 0) == (0.0, 1.0) and wilson_interval(math.nan, 10) == (0.0, 1.0)


def test_differences_are_ours_minus_published_in_points_with_the_matched_budget() -> None:
    block = _compare(0.88, 0.57, 1000)
    assert block["clean"]["difference"] == pytest.approx(-1.69)
    assert block["robust"]["difference"] == pytest.approx(-2.53)
    assert block["robust"]["eps"] == EPS and block["robust"]["reason"] is None
    assert block["clean"]["measured"] == 0.88 and block["robust"]["claimed"] == 0.5953
    assert block["clean"]["interval"] == list(wilson_interval(0.88, 1000))
    assert block["clean"]["within_noise"] is True and block["robust"]["within_noise"] is True
    assert block["warnings"] == [] and block["n_examples"] == 1000 and "within sampling noise" in block["note"]


def test_clean_far_below_the_published_warns_and_within_noise_does_not() -> None:
    far = _compare(0.80, 0.55, 2000)  # 9.7 points below with 2,000 examples: far beyond noise
    assert far["clean"]["within_noise"] is False
    assert len(far["warnings"]) == 1 and CLEAN_BELOW in far["warnings"][0] and "89.7%" in far["warnings"][0]
    near = _compare(0.80, 0.55, 20)  # the same gap on 20 examples is noise
    assert near["clean"]["within_noise"] is True and near["warnings"] == []
    above = _compare(0.97, 0.59, 2000)  # clean above the published one: not the wrong-preprocessing warning
    assert above["clean"]["within_noise"] is False and not any(CLEAN_BELOW in w for w in above["warnings"])


def test_robust_above_the_published_beyond_noise_warns_and_below_does_not() -> None:
    above = _compare(0.90, 0.70, 2000)
    assert above["robust"]["within_noise"] is False
    assert len(above["warnings"]) == 1 and ROBUST_ABOVE in above["warnings"][0] and "8/255" in above["warnings"][0]
    below = _compare(0.90, 0.45, 2000)  # a stronger attack than the leaderboard's: no warning
    assert below["robust"]["within_noise"] is False and below["warnings"] == []
    noise = _compare(0.90, 0.70, 10)
    assert noise["robust"]["within_noise"] is True and noise["warnings"] == []


def test_the_claimed_budget_is_matched_within_a_relative_1e_6_only() -> None:
    close = _compare(0.9, 0.6, 100, budgets=(0.0, EPS * (1 + 1e-8)))
    assert close["robust"]["measured"] == 0.6 and close["robust"]["reason"] is None
    other = _compare(0.9, 0.6, 100, budgets=(0.0, EPS * (1 + 1e-4), 16 / 255))
    assert other["robust"]["measured"] is None and other["robust"]["difference"] is None
    assert other["robust"]["reason"] == "no budget 8/255 in this run: add --eps 8/255"
    assert other["clean"]["difference"] is not None  # the clean comparison needs no budget


def test_another_norm_or_a_corruptions_claim_says_why_robust_was_not_compared() -> None:
    l2 = _compare(0.9, 0.6, 100, norm="l2", budgets=(0.0, 0.5))
    assert l2["robust"]["measured"] is None and "--norm linf --eps 8/255" in l2["robust"]["reason"]
    corr = _compare(0.9, 0.6, 100, claims={**CLAIMS, "metric": "corruptions_acc", "norm": None, "eps": None})
    assert corr["robust"]["measured"] is None and "corruptions" in corr["robust"]["reason"]
    assert _compare(0.9, 0.6, 100, claims={}) is None
    assert published_comparison(None, clean_accuracy=0.9, robust_accuracy={0.0: 0.9}, norm="linf", epsilons=[0.0],
                                n_examples=10) is None


def test_budget_text_writes_fractions_of_255_only_where_the_decimal_is_long() -> None:
    assert [budget_text(e) for e in (8 / 255, 4 / 255, 0.5, 0.3, 1.0)] == ["8/255", "4/255", "0.5", "0.3", "1"]


@pytest.fixture()
def report(trained_model, test_batch) -> Report:
    x, y = test_batch
    out = robustness.evaluate(trained_model, (x[:48], y[:48]), attacks=["fgsm"], epsilons=[0, EPS], progress=False,
                              checks=False)
    out.model = ModelInfo(source="robustbench:Test", name="Test", threat_model="Linf", claims=dict(CLAIMS))
    return out


def test_the_published_block_round_trips_through_report_json_and_shows_in_report_md(report, tmp_path) -> None:
    claims = {**CLAIMS, "robust_accuracy": 0.05}  # our fgsm number lies far above: the loud warning
    with pytest.warns(RobustnessWarning, match="do not quote it"):
        new = report.set_published(claims)
    assert len(new) == 1 and new[0] in report.warnings and ROBUST_ABOVE in new[0]
    pub = report.published
    assert pub["robust"]["measured"] == report.robust_accuracy[EPS]
    assert pub["clean"]["measured"] == report.clean_accuracy
    report.save(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["published"] == json.loads(json.dumps(pub))
    back = Report.from_dict(data)
    assert back.published == data["published"] and back.warnings == report.warnings
    md = (tmp_path / "report.md").read_text()
    assert "## Published vs measured" in md and "RobustBench leaderboard (test)" in md
    row = next(line for line in md.splitlines() if line.startswith("| robust accuracy at eps 8/255"))
    assert "5.0%" in row and f"{100 * report.robust_accuracy[EPS]:.1f}%" in row
    assert f"{pub['robust']['difference']:+.1f} pts (beyond noise)" in row
    assert "- name: Test, threat model: Linf" in md


def test_without_claims_there_is_no_block_and_older_reports_read(report, tmp_path) -> None:
    report.model = ModelInfo(source="model.pt")
    assert report.set_published() == [] and report.published is None
    assert published_markdown(None) == [] and "Published vs measured" not in report.to_markdown()
    data = report.to_dict()
    del data["published"]  # a report written before the block existed
    data["model"] = "model.pt"
    back = Report.from_dict(data)
    assert back.published is None and back.model.source == "model.pt"
    assert "Published vs measured" not in back.to_markdown()


def test_set_published_defaults_to_the_model_blocks_claims(report) -> None:
    with pytest.warns(RobustnessWarning, match="ABOVE the published 59.5%"):  # fgsm on a plain CNN: far above
        report.set_published()
    assert report.published["source"] == CLAIMS["source"] and report.published["robust"]["claimed"] == 0.5953


def test_model_block_lines_show_name_threat_model_and_input_transform() -> None:
    info = ModelInfo(source="timm:resnet50.a1_in1k", arch="resnet50", name="resnet50.a1_in1k",
                     input_transform={"size": [224, 224], "resize": 256, "interpolation": "bicubic"},
                     normalization={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    lines = info.markdown_lines()
    assert "- name: resnet50.a1_in1k" in lines
    assert "- input transform: resize 256 / crop 224 bicubic (applied to the data)" in lines
    assert any(line.startswith("- normalization: mean [0.485") for line in lines)
    plain = ModelInfo(source="model.pt").markdown_lines()
    assert not any("name:" in line or "input transform" in line for line in plain) and len(plain) == 4


def test_the_cli_sets_the_claims_of_a_loaded_model_beside_its_numbers(monkeypatch, tmp_path, capsys) -> None:
    import dataclasses

    from robustness import cli, loading

    real = loading.load_model

    def with_claims(spec: str, **kw: object) -> loading.LoadedModel:
        return dataclasses.replace(real("digits-cnn", **kw), claims={**CLAIMS, "robust_accuracy": 0.05})

    monkeypatch.setattr(cli.loading, "load_model", with_claims)
    code = cli.main(["evaluate", "--model", "robustbench:Test", "--attacks", "fgsm", "--eps", "0,8/255", "--n", "24",
                     "--no-checks", "--out", str(tmp_path)])
    assert code == 0 and ROBUST_ABOVE in capsys.readouterr().err
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["published"]["robust"]["claimed"] == 0.05
    assert data["published"]["robust"]["measured"] == data["robust_accuracy"][repr(EPS)]
    assert any(ROBUST_ABOVE in w for w in data["warnings"])
    assert "## Published vs measured" in (tmp_path / "report.md").read_text()


def test_claims_on_other_data_are_marked_not_comparable_with_one_warning() -> None:
    from robustness.claims import published_line, same_dataset

    claims = {**CLAIMS, "dataset": "cifar10"}
    assert same_dataset("cifar10", "cifar10, test split") is True and same_dataset("cifar10", "cifar10-c") is True
    assert same_dataset("imagenet", "imagenet val (RobustBench 5,000-image subset)") is True
    assert same_dataset("cifar10", "cifar100, test split") is False and same_dataset("cifar10", "d.npz") is False
    assert same_dataset(None, "cifar10") is None and same_dataset("cifar10", None) is None
    mine = published_comparison(claims, clean_accuracy=0.50, robust_accuracy={0.0: 0.5, EPS: 0.9}, norm="linf",
                                epsilons=[0.0, EPS], n_examples=5000, data="d.npz")
    assert mine["comparable"] is False and len(mine["warnings"]) == 1  # not the noise warnings
    assert "compare different images" in mine["warnings"][0] and CLEAN_BELOW not in mine["warnings"][0]
    assert "not comparable" in published_line(mine)
    same = published_comparison(claims, clean_accuracy=0.50, robust_accuracy={0.0: 0.5, EPS: 0.9}, norm="linf",
                                epsilons=[0.0, EPS], n_examples=5000, data="cifar10, test split")
    assert same["comparable"] is True and len(same["warnings"]) == 2  # clean far below, robust far above
    line = published_line(same)
    assert "clean 89.7%, ours 50.0%" in line and "robust at 8/255 59.5%, ours 90.0%" in line
    assert published_line(None) is None
