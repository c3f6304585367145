"""The robustness curve (robustness/curve.py, epsilons="curve"): exact breakpoints, the median distance,
its agreement with the per-budget tables, errors, the CLI, resuming, and per-sample results."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import robustness
from robustness import cli
from robustness.attacks.base import AttackKind, FixedBudgetAttack, MinimizationAttack
from robustness.config import EvalConfig
from robustness.curve import Curve, curve_breakpoints, median_distance
from robustness.errors import InputError
from robustness.report import Report

# ------------------------------------------------------------------------------------------------ a hand-built case
# Inputs (n, 2) in [0, 1]; the model says class 1 where x[:, 1] >= 0.5, else class 0. A sample of class 0 at
# height h < 0.5 is broken by raising x[:, 1] by 0.5 - h (+ a margin): its L2 distance is known in advance.

MARGIN = 1 / 64  # exact in float32


class Threshold(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([0.5 - x[:, 1], x[:, 1] - 0.5], dim=1) * 10


@dataclass(frozen=True, kw_only=True)
class Lift(MinimizationAttack):
    """Raises x[:, 1] just across the boundary, except where x[:, 0] == 1 (it "fails" there)."""

    name: ClassVar[str] = "lift"
    kind: ClassVar[AttackKind] = "minimization"
    norm: str = "l2"

    def _run(self, model, x, y, *, bounds, target, generator) -> Tensor:
        out = x.clone()
        step = (0.5 - x[:, 1] + MARGIN).clamp(min=0)
        out[:, 1] += torch.where(x[:, 0] == 1, torch.zeros_like(step), step)
        return out


@dataclass(frozen=True, kw_only=True)
class Push(FixedBudgetAttack):
    """Raises x[:, 1] by the whole budget, also where Lift fails."""

    name: ClassVar[str] = "push"
    kind: ClassVar[AttackKind] = "iterative"
    norm: str = "l2"

    def _run(self, model, x, y, *, eps, bounds, target, generator, **_) -> Tensor:
        out = x.clone()
        out[:, 1] += eps
        return out


HEIGHTS = [0.0625, 0.25, 0.25, 0.375, 0.4375, 0.125, 0.75]  # the last one is misclassified clean (class 1)
FAILS = [False, False, False, False, False, True, False]


def _data() -> tuple[Tensor, Tensor]:
    x = torch.tensor([[1.0 if f else 0.0, h] for h, f in zip(HEIGHTS, FAILS)])
    return x, torch.zeros(len(HEIGHTS), dtype=torch.long)


def _evaluate(attacks, epsilons, norm="l2", **kw) -> Report:
    return robustness.evaluate(Threshold(), _data(), attacks=attacks, epsilons=epsilons, norm=norm,
                               checks=False, progress=False, **kw)


def test_breakpoints_are_exact_on_known_distances() -> None:
    correct = torch.tensor([True, True, True, False, True])
    distance = torch.tensor([0.3, 0.1, 0.3, 0.0, math.inf], dtype=torch.float64)
    assert curve_breakpoints(correct, distance) == [(0.1, 3 / 5), (0.3, 1 / 5)]
    assert median_distance(correct, distance) == 0.3  # (0.3 + 0.3) / 2 over [0.1, 0.3, 0.3, inf]
    assert median_distance(correct, torch.tensor([0.3, 0.1, 0.3, 0.0, 0.2], dtype=torch.float64)) == 0.25


def test_median_is_infinite_when_half_are_never_broken_and_json_says_so() -> None:
    correct = torch.tensor([True, True, True, True])
    curve = Curve.measure(correct, {"a": torch.tensor([0.2, math.inf, math.inf, 0.1])}, ["a"], {})
    assert curve.median_distance == math.inf and curve.never_broken == 2
    data = json.loads(json.dumps(curve.to_dict(), allow_nan=False))
    assert data["median_distance"] is None and data["median_distance_infinite"] is True
    assert Curve.from_dict(data) == curve
    nobody = Curve.measure(torch.tensor([False]), {"a": torch.tensor([math.inf])}, ["a"], {})
    assert math.isnan(nobody.median_distance) and nobody.to_dict()["median_distance_infinite"] is False


@given(st.lists(st.tuples(st.booleans(), st.one_of(st.floats(0.01, 2.0), st.just(math.inf))), min_size=1,
                max_size=30), st.floats(0, 2.5))
def test_curve_is_monotone_and_counts_what_it_says(samples, eps) -> None:
    correct = torch.tensor([c for c, _ in samples])
    distance = torch.tensor([d for _, d in samples], dtype=torch.float64)
    curve = Curve.measure(correct, {"a": distance}, ["a"], {})
    accs = [a for _, a in curve.breakpoints]
    assert accs == sorted(accs, reverse=True) and all(a <= curve.clean_accuracy for a in accs)
    expected = sum(c and d > eps for c, d in samples) / len(samples)
    assert curve.accuracy_at(eps) == pytest.approx(expected)


def test_evaluate_curve_on_known_distances_agrees_with_the_budget_tables() -> None:
    report = _evaluate([Lift(), Push()], ["curve", 0, 0.1, 0.2, 0.3])
    c = report.curve
    assert c is not None and report.epsilons == [0.0, 0.1, 0.2, 0.3]
    # Lift's distances: 0.5 - h + margin for the samples it does not fail on
    lifted = sorted(0.5 - h + MARGIN for h, f in zip(HEIGHTS, FAILS) if not f and h < 0.5)
    assert [d for d, _ in c.minimization] == pytest.approx(sorted(set(lifted)))
    assert c.minimization_attacks == ["lift"]
    # the right-continuous steps: the sample at distance d is broken at d itself
    for d, acc in c.minimization:
        assert c.minimization_at(d) == acc and c.minimization_at(d - 1e-6) > acc
    # the curve over every attack equals the per-sample worst case at each listed budget
    for eps in report.epsilons:
        assert c.accuracy_at(eps) == report.robust_accuracy[eps]
    # sample 5 (h=0.125) only Push breaks, at 0.375 + margin > 0.3: robust everywhere listed, beyond Lift
    assert report.per_sample["distance"][5] == math.inf and report.per_sample["distance_by"][5] == ""
    assert report.per_sample["distance"][6] == 0.0  # misclassified clean
    # the gap: Lift's curve minus Push's worst case, at each listed budget
    for eps, g in c.gap.items():
        assert g["gap"] == pytest.approx(c.minimization_at(eps) - report.by_attack["push"][eps])
        assert g["fixed_budget"] == report.by_attack["push"][eps]
    # correct samples' distances: 0.078, 0.141, 0.266, 0.266, 0.453 (Lift) and inf (sample 5): the middle two
    assert c.median_distance == pytest.approx(0.5 - 0.25 + MARGIN)
    table = report.curve_table()
    assert "| 0.3 |" in table and "pts" in table
    assert "## Robustness curve" in report.to_markdown()


@pytest.mark.parametrize("norm, fixed", [("linf", "fgsm"), ("l2", "pgd"), ("linf", "pgd")])
def test_fixed_budget_distances_count_at_their_budget_despite_rounding(norm, fixed) -> None:
    # FGSM/PGD perturbations of inputs that are not dyadic fractions measure eps plus a float32 rounding error
    # (0.3 + 0.1 - 0.3 > 0.1): they still count at eps, where the per-budget table counts them
    heights = [0.3, 0.33, 0.21, 0.17, 0.45, 0.39, 0.27, 0.12]
    x = torch.tensor([[1.0, h] for h in heights])  # Lift fails on every one: the fixed attack decides
    report = robustness.evaluate(Threshold(), (x, torch.zeros(len(heights), dtype=torch.long)),
                                 attacks=[Lift(norm=norm), fixed], epsilons=["curve", 0, 0.1, 0.2, 1 / 3],
                                 norm=norm, checks=False, progress=False)
    assert report.robust_accuracy[0.2] < report.robust_accuracy[0.1] < 1  # the fixed attack broke some
    for eps in report.epsilons:
        assert report.curve.accuracy_at(eps) == report.robust_accuracy[eps]
    broken = [d for d in report.per_sample["distance"] if math.isfinite(d)]
    assert broken and max(broken) <= 1 / 3  # never above the budget it was verified at


def test_curve_calls_the_minimization_attack_without_eps_and_other_runs_with_it(monkeypatch) -> None:
    seen: list[object] = []

    @dataclass(frozen=True, kw_only=True)
    class Stops(Lift):
        stops_at_eps: ClassVar[bool] = True

        def _run(self, model, x, y, *, bounds, target, generator, eps=None) -> Tensor:
            seen.append(eps)
            return super()._run(model, x, y, bounds=bounds, target=target, generator=generator)

    _evaluate([Stops()], ["curve", 0, 0.2])
    _evaluate([Stops()], [0, 0.2])
    assert seen == [None, 0.2]


def test_curve_alone_lists_budget_0_and_a_lone_minimization_attack_suffices() -> None:
    report = _evaluate([Lift()], "curve")
    assert report.epsilons == [0.0] and report.curve is not None and report.curve.gap == {}
    assert report.curve.accuracy_at(0.5) == pytest.approx(1 / 7)  # all 5 lifted samples broken; 1 of 6 left


@pytest.mark.parametrize("attacks, epsilons, message", [
    ("push", ["curve", 0, 0.1], "needs at least one minimization attack"),
    ("lift+push", "curve", "needs budgets to run at"),
    ("lift", ["curve", "all"], "must be a number or 'curve'"),
])
def test_curve_errors_say_what_to_do(attacks, epsilons, message) -> None:
    objects = {"push": [Push()], "lift+push": [Lift(), Push()], "lift": [Lift()]}
    with pytest.raises(InputError, match=message):
        _evaluate(objects[attacks], epsilons)


def test_no_minimization_attack_names_the_registered_ones() -> None:
    with pytest.raises(InputError, match="add one of cw"):
        robustness.EvalConfig(attacks=["pgd"], epsilons="curve", norm="l2")


def test_a_curve_run_resumes_and_never_resumes_a_plain_state(tmp_path) -> None:
    state = tmp_path / "state"
    full = _evaluate([Lift(), Push()], ["curve", 0, 0.2], batch_size=2, state=state)
    ranges = sorted(state.glob("range-*.pt"))
    assert len(ranges) == 4
    ranges[1].unlink()  # as if killed
    resumed = _evaluate([Lift(), Push()], ["curve", 0, 0.2], batch_size=2, state=state)
    assert resumed.curve == full.curve and resumed.per_sample == full.per_sample
    plain = tmp_path / "plain"
    _evaluate([Lift(), Push()], [0, 0.2], batch_size=2, state=plain)
    with pytest.raises(InputError, match=r"other budgets .*\"curve\""):
        _evaluate([Lift(), Push()], ["curve", 0, 0.2], batch_size=2, state=plain)


def test_per_sample_results_survive_report_json_and_compare(tmp_path) -> None:
    strong = _evaluate([Lift(), Push()], ["curve", 0, 0.2, 0.4])
    weak = _evaluate([Push()], [0, 0.2, 0.4])
    strong.save(tmp_path / "strong")
    read = Report.from_dict(json.loads((tmp_path / "strong" / "report.json").read_text()))
    assert read.per_sample == strong.per_sample and read.curve == strong.curve
    assert read.samples() == strong.samples()
    row = strong.samples()[0]  # h=0.0625: Lift at 0.4375 + margin; Push never within 0.4
    assert row.correct and row.broken_at is None and row.distance_by == "lift"
    assert row.distance == pytest.approx(0.5 - 0.0625 + MARGIN)
    diff = robustness.compare_samples(read, weak, eps=0.4)
    # at 0.4 Push breaks h >= 0.125 (needs 0.5 - h); Lift also h=0.0625 beyond 0.4? no: 0.45 > 0.4
    assert diff.only_a == [] and diff.only_b == []
    everywhere = robustness.compare_samples(read, weak)  # broken at all: Lift's distances beyond the budgets count
    assert everywhere.only_a == [0] and 6 in everywhere.both and everywhere.neither == []
    with pytest.raises(InputError, match="not a budget"):
        robustness.compare_samples(read, weak, eps=0.3)
    other = Report.from_dict({**read.to_dict(), "per_sample": {**read.per_sample, "label": [1] * 7}})
    with pytest.raises(InputError, match="different data"):
        robustness.compare_samples(read, other)


def test_cli_eps_curve_with_cw_writes_the_curve_and_its_plot(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--model", "digits-cnn", "--eps", "curve,0,1/2", "--attacks",
                     "cw(binary_search_steps=2,steps=10)", "--norm", "l2", "--n", "12", "--no-checks", "--quiet",
                     "--out", str(out)])
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    assert data["epsilons"] == [0.0, 0.5] and data["model"]["source"] == "digits-cnn"
    curve = data["curve"]
    s = data["per_sample"]
    found = {d for d, label, pred in zip(s["distance"], s["label"], s["clean_prediction"])
             if label == pred and d is not None}
    assert found and [d for d, _ in curve["breakpoints"]] == sorted(found)
    report = Report.from_dict(data)
    assert report.curve.accuracy_at(0.5) == report.robust_accuracy[0.5]
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "median l2 distance" in capsys.readouterr().out


def test_cli_curve_without_a_minimization_attack_exits_2(tmp_path, capsys) -> None:
    code = cli.main(["evaluate", "--model", "digits-cnn", "--eps", "curve,0,0.1", "--attacks", "pgd", "--n", "4",
                     "--out", str(tmp_path / "o")])
    assert code == 2 and "minimization attack" in capsys.readouterr().err
    assert cli.CURVE_ATTACKS["l2"].split(",")[0] == "fmn"  # the defaults, once fmn/ddn/fab are merged


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_the_default_curve_attacks_are_minimization_attacks_for_their_norm(norm) -> None:
    attacks = EvalConfig(attacks=tuple(cli.CURVE_ATTACKS[norm].split(",")), epsilons="curve", norm=norm).named_attacks
    assert attacks and all(a.minimizes for a in attacks.values())
    assert {a.norm for a in attacks.values()} == {norm}


def test_cli_eps_curve_without_attacks_runs_the_default_minimization_attacks(tmp_path) -> None:
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--model", "digits-cnn", "--eps", "curve", "--norm", "l2", "--n", "8",
                     "--no-checks", "--quiet", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    assert list(data["attacks"]) == cli.CURVE_ATTACKS["l2"].split(",")
    s = data["per_sample"]
    correct = [label == pred for label, pred in zip(s["label"], s["clean_prediction"])]
    # the digits CNN is not robust: the minimum-norm attacks break every correctly classified sample
    assert all(d is not None for d, ok in zip(s["distance"], correct) if ok)
    assert len(data["curve"]["breakpoints"]) >= 1 and data["curve"]["median_distance"] is not None
