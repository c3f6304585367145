"""assert_robust and assert_attack_succeeds: the gate, the failure message, argument validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustness.attacks import PGD
from robustness import runner
from robustness.config import EvalConfig
from robustness.errors import InputError
from robustness.report import Check, Report
from robustness.testing import (
    RobustnessAssertionError,
    assert_attack_succeeds,
    assert_robust,
    robust_fraction,
    success_rate,
    verify_robust,
)

pytest_plugins = ["pytester"]


def linear_case(margins: list[float], wrong: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A fixed linear classifier on 4 features and points at Linf distance ``m`` from its boundary.

    Class 0 when the mean feature exceeds 0.5; a point ``0.5 +- m`` in every feature is broken
    within Linf ``eps`` exactly when ``m < eps`` (FGSM and PGD find it: the gradient sign is the
    optimal direction). The first ``wrong`` points get the wrong label.
    """
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        model.bias.copy_(torch.tensor([-2.0, 2.0]))
    m = torch.tensor(margins)
    side = torch.tensor([1.0, -1.0]).repeat(len(margins) // 2 + 1)[: len(margins)]
    x = (0.5 + side * m)[:, None].repeat(1, 4)
    y = (side < 0).long()
    y[:wrong] = 1 - y[:wrong]
    return model.eval(), (x, y)


TEN = [0.025 + 0.05 * i for i in range(10)]  # robust at eps=0.1: 8 of 10; at 0.2: 6; at 0.3: 4


@pytest.fixture()
def no_evaluation(monkeypatch):
    """Validation must happen before anything is evaluated."""

    def fail(*args, **kwargs):
        raise AssertionError("evaluate() ran before the arguments were validated")

    monkeypatch.setattr(runner, "evaluate", fail)


def test_passing_gate_returns_the_report(trained_model, test_batch) -> None:
    reference = runner.evaluate(trained_model, test_batch, attacks="smoke", epsilons=[0.0, 0.05], progress=False,
                                checks=False)
    measured = robust_fraction(reference)
    report = assert_robust(trained_model, test_batch, eps=[0.0, 0.05], min_accuracy=measured, checks=False)
    assert isinstance(report, Report)
    assert report.epsilons == [0.0, 0.05] and list(report.by_attack) == ["fgsm", "pgd"]
    assert report.robust_accuracy == reference.robust_accuracy  # same seed: the same evaluation


def test_gate_is_at_the_largest_budget(trained_model, test_batch) -> None:
    report = runner.evaluate(trained_model, test_batch, attacks="smoke", epsilons=[0.0, 0.3], progress=False,
                             checks=False)
    clean, robust = report.clean_accuracy, robust_fraction(report)
    assert robust < clean  # an undefended CNN on digits is broken at Linf 0.3
    with pytest.raises(RobustnessAssertionError) as info:  # the order of the budgets does not matter
        assert_robust(trained_model, test_batch, eps=[0.3, 0.0], min_accuracy=clean, checks=False)
    assert info.value.measured == pytest.approx(robust)
    assert info.value.threshold == pytest.approx(clean)


def test_failure_message_holds_what_failed_the_threshold_the_value_and_the_table() -> None:
    model, data = linear_case(TEN)
    with pytest.raises(RobustnessAssertionError) as info:
        assert_robust(model, data, eps=[0.1, 0.2], min_accuracy=0.75, attacks=["fgsm", "pgd"])
    err = info.value
    assert isinstance(err, AssertionError)
    text = str(err)
    assert text.startswith("assert_robust failed:")
    assert "worst-case robust accuracy 60.0% (0.6) at linf eps=0.2 is below min_accuracy=0.75 (75.0%)" in text
    assert err.report is not None and err.report.table() in text
    assert "| eps | worst case | fgsm | pgd |" in text
    assert "10 examples, clean accuracy 100.0%" in text and "seed 0" in text
    assert err.measured == pytest.approx(0.6) and err.threshold == 0.75 and len(err.reasons) == 1


def test_threshold_is_compared_on_exact_counts() -> None:
    # 7 of 10 robust: float32 gives 0.69999999; the gate must still hold for min_accuracy=0.7
    model, data = linear_case([0.025, 0.05, 0.075] + [0.3] * 7)
    report = assert_robust(model, data, eps=0.1, min_accuracy=0.7)
    assert robust_fraction(report) == 0.7
    with pytest.raises(RobustnessAssertionError):
        assert_robust(model, data, eps=0.1, min_accuracy=0.71)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 12), st.integers(1, 12), st.floats(0.0, 1.0))
def test_gate_holds_exactly_when_enough_samples_are_robust(robust: int, broken: int, threshold: float) -> None:
    model, data = linear_case([0.3] * robust + [0.05] * broken)
    holds = robust / (robust + broken) >= threshold
    if holds:
        assert_robust(model, data, eps=0.1, min_accuracy=threshold, attacks="fgsm", checks=False)
    else:
        with pytest.raises(RobustnessAssertionError):
            assert_robust(model, data, eps=0.1, min_accuracy=threshold, attacks="fgsm", checks=False)


def _with_check(monkeypatch, status_when_lenient: str = "warning") -> list[EvalConfig]:
    calls: list[EvalConfig] = []
    real = runner.evaluate

    def evaluate(model, data, *, config):
        calls.append(config)
        report = real(model, data, config=config)
        status = "failed" if config.strict else status_when_lenient
        report.checks.append(Check("gradient-masking", status, "gradients vanish on 40% of the samples"))
        return report

    monkeypatch.setattr(runner, "evaluate", evaluate)
    return calls


def test_strict_fails_on_a_check_that_did_not_pass(monkeypatch) -> None:
    calls = _with_check(monkeypatch)
    model, data = linear_case(TEN)
    report = assert_robust(model, data, eps=0.1, min_accuracy=0.5)  # lenient: the warning does not fail
    assert report.checks[-1].status == "warning" and calls[-1].strict is False
    with pytest.raises(RobustnessAssertionError) as info:
        assert_robust(model, data, eps=0.1, min_accuracy=0.5, strict=True)
    assert calls[-1].strict is True
    text = str(info.value)
    assert "strict mode: 1 sanity check did not pass: gradient-masking (failed)" in text
    assert "checks that did not pass:" in text and "gradients vanish on 40% of the samples" in text
    assert "below min_accuracy" not in text  # the accuracy gate held


def test_accuracy_failure_lists_checks_that_warned_even_when_lenient(monkeypatch) -> None:
    _with_check(monkeypatch)
    model, data = linear_case(TEN)
    with pytest.raises(RobustnessAssertionError) as info:
        assert_robust(model, data, eps=0.3, min_accuracy=0.5)
    assert "gradient-masking [warning]: gradients vanish" in str(info.value)
    assert "strict mode" not in str(info.value)


def test_keyword_arguments_reach_evaluate(monkeypatch) -> None:
    calls = _with_check(monkeypatch, "passed")
    model, data = linear_case(TEN)
    assert_robust(model, data, eps=[0.1], min_accuracy=0.0, attacks="fgsm", norm="linf", bounds=(0.0, 1.0),
                  seed=7, device="cpu", batch_size=3, gradient_mode="naive", checks=False)
    config = calls[-1]
    assert config.attacks == ("fgsm",) and config.epsilons == (0.1,) and config.seed == 7
    assert config.device == torch.device("cpu")
    assert config.batch_size == 3 and config.gradient_mode == "naive" and config.checks is False
    assert config.progress is False and config.bounds == (0.0, 1.0)


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan, True, "0.8", None])
def test_min_accuracy_must_be_a_fraction(value, no_evaluation) -> None:
    model, data = linear_case(TEN)
    with pytest.raises(InputError, match="min_accuracy must be a fraction in \\[0, 1\\]"):
        assert_robust(model, data, eps=0.1, min_accuracy=value)


def test_percent_instead_of_fraction_gets_a_hint(no_evaluation) -> None:
    model, data = linear_case(TEN)
    with pytest.raises(InputError, match="did you mean 0.8"):
        assert_robust(model, data, eps=0.1, min_accuracy=80)


@pytest.mark.parametrize("eps", [None, [], -0.1, [0.1, math.inf], "0.1"])
def test_eps_must_be_budgets(eps, no_evaluation) -> None:
    model, data = linear_case(TEN)
    with pytest.raises(InputError):
        assert_robust(model, data, eps=eps, min_accuracy=0.5)


def test_epsilons_keyword_and_bad_strict_are_rejected(no_evaluation) -> None:
    model, data = linear_case(TEN)
    with pytest.raises(InputError, match="eps="):
        assert_robust(model, data, eps=0.1, min_accuracy=0.5, epsilons=[0.2])
    with pytest.raises(InputError, match="strict must be True or False"):
        assert_robust(model, data, eps=0.1, min_accuracy=0.5, strict="yes")


def test_attack_succeeds_counts_only_clean_correct_samples() -> None:
    # 2 misclassified points, then 8 correct ones of which those with margin < 0.1 break (2)
    model, data = linear_case(TEN[:2] + [0.3, 0.35] + TEN[:2] + [0.3, 0.35, 0.4, 0.45], wrong=2)
    report = assert_attack_succeeds(model, data, attack="pgd", eps=[0.05, 0.1], min_success_rate=0.25)
    assert success_rate(report) == (0.25, 2, 8)
    assert success_rate(report, 0.05) == (0.125, 1, 8)
    with pytest.raises(RobustnessAssertionError) as info:
        assert_attack_succeeds(model, data, attack="pgd", eps=[0.05, 0.1], min_success_rate=0.3)
    text = str(info.value)
    assert text.startswith("assert_attack_succeeds failed:")
    assert "attack success rate 25.0% (2 of 8 clean-correct samples broken) at linf eps=0.1" in text
    assert "below min_success_rate=0.3 (30.0%)" in text and "| eps | worst case | pgd |" in text
    assert info.value.measured == 0.25 and info.value.threshold == 0.3


def test_attack_succeeds_on_an_undefended_cnn(trained_model, test_batch) -> None:
    report = assert_attack_succeeds(trained_model, test_batch, attack=PGD(steps=10), eps=0.3, min_success_rate=0.9)
    rate, broken, correct = success_rate(report)
    assert rate >= 0.9 and broken <= correct <= len(test_batch[1])
    # the rate agrees with the report's accuracies: robust = clean * (1 - rate)
    assert report.worst_case == pytest.approx(report.clean_accuracy * (1 - rate), abs=1e-6)


def test_attack_success_cannot_be_measured_without_correct_samples() -> None:
    model, (x, y) = linear_case(TEN)
    with pytest.raises(RobustnessAssertionError, match="classifies none of the 10 examples correctly") as info:
        assert_attack_succeeds(model, (x, 1 - y), attack="fgsm", eps=0.1, min_success_rate=0.0)
    assert info.value.measured is None


@pytest.mark.parametrize("kwargs", [
    {"eps": 0.0, "min_success_rate": 0.5},
    {"eps": [0.0], "min_success_rate": 0.5},
    {"eps": 0.1, "min_success_rate": 2.0},
    {"eps": 0.1, "min_success_rate": -1},
])
def test_attack_succeeds_validates_arguments(kwargs, no_evaluation) -> None:
    model, data = linear_case(TEN)
    with pytest.raises(InputError):
        assert_attack_succeeds(model, data, attack="fgsm", **kwargs)


def test_unknown_or_doubled_settings_are_type_errors(no_evaluation) -> None:
    model, data = linear_case(TEN)
    with pytest.raises(TypeError, match="got multiple values for the setting 'attacks'"):
        assert_attack_succeeds(model, data, attack="fgsm", attacks="pgd", eps=0.1, min_success_rate=0.5)
    with pytest.raises(TypeError, match=r"assert_robust\(\) got an unexpected keyword argument 'sed' \(did you mean"):
        assert_robust(model, data, eps=0.1, min_accuracy=0.5, sed=3)


def test_verify_robust_reads_a_saved_report(tmp_path) -> None:
    model, data = linear_case(TEN)
    report = runner.evaluate(model, data, attacks="fgsm", epsilons=[0.1, 0.2], progress=False)
    loaded = Report.from_dict(report.to_dict())  # no per-sample record: the float accuracies are used
    assert verify_robust(loaded, min_accuracy=0.55) is loaded
    with pytest.raises(RobustnessAssertionError, match="below min_accuracy=0.65"):
        verify_robust(loaded, min_accuracy=0.65)


GATES = """
import torch
from torch import nn
from robustness.testing import assert_attack_succeeds, assert_robust

def constant():  # always class 0: nothing can be broken
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([2.0, 0.0]))
    return model.eval()

def test_robust():
    assert_robust(constant(), (torch.rand(8, 4), torch.ones(8, dtype=torch.long)), eps=0.1, min_accuracy=0.5,
                  attacks="fgsm")

def test_attack():
    assert_attack_succeeds(constant(), (torch.rand(8, 4), torch.zeros(8, dtype=torch.long)), attack="fgsm", eps=0.1,
                           min_success_rate=0.5)
"""


def test_a_failed_gate_shows_the_users_call_not_the_helpers_frames(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gates=GATES)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    assert "RobustnessAssertionError: assert_robust failed" in text
    assert "RobustnessAssertionError: assert_attack_succeeds failed" in text
    assert "report = Report(" not in text and "def _fail_on" not in text and "robustness/testing.py" not in text
