"""The pytest plugin, run through pytest's own ``pytester`` on tiny robustness test files.

The inner runs are in-process (fast). The plugin comes from the ``pytest11`` entry point when
the package is installed with it; otherwise it is named with ``-p`` (never both: pytest would
register the one module twice).
"""

from __future__ import annotations

import json
import os
import random
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

# pytester's in-process runs drop the modules they imported when they end and keep those
# imported before: importing the runner here spares each inner run importing it again (and
# _report_saving_imported below does the same for what saving a report imports)
import robustness.testing  # noqa: F401
from robustness.pytest_plugin import sanitize_node_id, test_seed

pytest_plugins = ["pytester"]


def _entry_point_loaded() -> bool:
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == "robustness.pytest_plugin" for ep in entry_points(group="pytest11"))


PLUGIN = [] if _entry_point_loaded() else ["-p", "robustness.pytest_plugin"]

# A fixed linear classifier on 4 features: class 0 when the mean feature exceeds 0.5. Point i
# sits at 0.5 +- m_i in every feature, so Linf eps breaks it exactly when m_i < eps (and L2 eps
# when m_i < eps / 2). Margins 0.025, 0.075, ..., 0.475: robust accuracy is 80% at Linf 0.1,
# 60% at 0.2, 40% at 0.3.
CONFTEST = """
import pytest
import torch
from torch import nn

MARGINS = [0.025 + 0.05 * i for i in range(10)]


@pytest.fixture
def linear():
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        model.bias.copy_(torch.tensor([-2.0, 2.0]))
    side = torch.tensor([1.0, -1.0]).repeat(5)
    x = (0.5 + side * torch.tensor(MARGINS))[:, None].repeat(1, 4)
    return model.eval(), (x, (side < 0).long())
"""


# other plugins of this environment only slow the inner runs down (hypothesis' imports itself)
QUIET = [arg for name in ("randomly", "cacheprovider", "hypothesispytest", "benchmark") for arg in ("-p", f"no:{name}")]


@pytest.fixture(autouse=True, scope="module")
def _report_saving_imported(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Save one report first, so the inner runs find matplotlib whole in ``sys.modules``.

    Otherwise each run imports it afresh (a second a run) or, worse, re-imports part of it
    beside a part an earlier test imported, and two copies of its classes do not mix.
    """
    from torch import nn

    from robustness import runner

    x = torch.rand(4, 4)
    report = runner.evaluate(nn.Linear(4, 2), (x, torch.tensor([0, 1, 0, 1])), attacks="fgsm", epsilons=[0.1],
                             progress=False, checks=False)
    report.save(tmp_path_factory.mktemp("warm-up"))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, *QUIET, *args)


@pytest.fixture
def robust_tests(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_model="""
        import pytest

        @pytest.mark.robustness(eps=0.1, min_accuracy=0.8)
        def test_holds(robustness_evaluator, linear):
            report = robustness_evaluator(*linear)
            assert report.epsilons == [0.1] and report.norm == "linf"

        @pytest.mark.robustness(eps=[0.1, 0.2], min_accuracy=0.8)
        def test_breaks(robustness_evaluator, linear):
            robustness_evaluator(*linear)
    """)
    return pytester


def test_passing_and_failing_robustness_tests(robust_tests: pytest.Pytester) -> None:
    result = run(robust_tests)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*RobustnessAssertionError: robustness test failed:",
        "*worst-case robust accuracy 60.0% (0.6) at linf eps=0.2 is below min_accuracy=0.8 (80.0%)",
        "*| eps | worst case | fgsm | pgd |",
        "*| 0.1 | 80.0% | 80.0% | 80.0% |",
        "*| 0.2 | 60.0% | 60.0% | 60.0% |",
    ])
    # the terminal summary lists each evaluation
    result.stdout.fnmatch_lines(["*- robustness -*", "PASSED*test_holds: worst case 80.0% at linf eps=0.1 (min 80.0%)",
                                 "FAILED*test_breaks: worst case 60.0% at linf eps=0.2 (min 80.0%)"])


def test_message_reads_the_same_without_assertion_rewriting(robust_tests: pytest.Pytester) -> None:
    result = run(robust_tests, "--assert=plain", "--tb=short", "-k", "breaks")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*below min_accuracy=0.8 (80.0%)", "*| 0.2 | 60.0% | 60.0% | 60.0% |"])


def test_header_shows_the_seed_and_the_command_line_overrides_the_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result.stdout.fnmatch_lines([f"robustness: --robustness-seed=0, device {device} (auto), preset smoke, strict off"])
    pytester.makeini("[pytest]\nrobustness_seed = 7\nrobustness_preset = fgsm\nrobustness_strict = true\n")
    run(pytester).stdout.fnmatch_lines(["robustness: --robustness-seed=7, * preset fgsm, strict on"])
    result = run(pytester, "--robustness-seed", "123", "--robustness-preset", "standard", "--robustness-device", "cpu")
    result.stdout.fnmatch_lines(["robustness: --robustness-seed=123, device cpu, preset standard, strict on"])


SEED_TESTS = """
import json, random
import numpy as np
import pytest
import torch

def record(name, seed):
    with open(f"seed-{name}.json", "w") as f:
        json.dump({"seed": seed, "torch": torch.rand(1).item(), "numpy": float(np.random.rand()),
                   "random": random.random()}, f)

def test_first(robustness_seed):
    record("first", robustness_seed)

@pytest.mark.parametrize("p", [1])
def test_second(robustness_seed, p):
    record("second", robustness_seed)

@pytest.mark.robustness(eps=0.1)
def test_marker_only():
    record("marker", None)

def test_unrelated_before():
    torch.manual_seed(1); np.random.seed(1); random.seed(1)
    torch.rand(1); np.random.rand(); random.random()

def test_robustness_in_between(robustness_seed):
    torch.rand(100); np.random.rand(100); [random.random() for _ in range(100)]

def test_unrelated_after():
    after = (torch.rand(1).item(), float(np.random.rand()), random.random())
    torch.manual_seed(1); np.random.seed(1); random.seed(1)
    torch.rand(1); np.random.rand(); random.random()
    assert after == (torch.rand(1).item(), float(np.random.rand()), random.random())
"""


def _seeds(pytester: pytest.Pytester) -> dict[str, dict]:
    names = ("first", "second", "marker")
    return {name: json.loads((pytester.path / f"seed-{name}.json").read_text()) for name in names}


def test_each_test_is_seeded_from_its_id_stably_and_others_are_left_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_seeds=SEED_TESTS)
    run(pytester).assert_outcomes(passed=6)  # test_unrelated_after: the plugin put the RNG state back
    once = _seeds(pytester)
    assert once["first"]["seed"] == test_seed(0, "test_seeds.py::test_first")
    assert once["second"]["seed"] == test_seed(0, "test_seeds.py::test_second[1]")
    assert once["first"]["seed"] != once["second"]["seed"]
    assert once["first"]["torch"] != once["second"]["torch"]
    # the global RNGs were seeded with the test's seed (the marker alone is enough)
    generator = torch.Generator().manual_seed(once["first"]["seed"])
    assert once["first"]["torch"] == torch.rand(1, generator=generator).item()
    assert once["first"]["random"] == random.Random(once["first"]["seed"]).random()
    marker_seed = test_seed(0, "test_seeds.py::test_marker_only")
    assert once["marker"]["numpy"] == np.random.RandomState(marker_seed).rand()
    run(pytester).assert_outcomes(passed=6)
    assert _seeds(pytester) == once  # stable across runs
    run(pytester, "-k", "second").assert_outcomes(passed=1, deselected=5)
    assert _seeds(pytester)["second"] == once["second"]  # and when run alone
    run(pytester, "--robustness-seed", "5").assert_outcomes(passed=6)
    again = _seeds(pytester)
    assert again["first"]["seed"] == test_seed(5, "test_seeds.py::test_first") != once["first"]["seed"]
    assert again["marker"]["numpy"] != once["marker"]["numpy"]  # the marker alone makes it a robustness test


def test_marker_supplies_eps_norm_preset_and_min_accuracy(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_marker="""
        import pytest

        @pytest.mark.robustness(eps=0.5, norm="l2", preset="fgsm", min_accuracy=0.5)
        def test_from_marker(robustness_evaluator, linear):
            report = robustness_evaluator(*linear)
            assert report.norm == "l2" and report.epsilons == [0.5] and list(report.by_attack) == ["fgsm"]
            assert report.worst_case == pytest.approx(0.5)  # margins above eps / 2 = 0.25

        @pytest.mark.robustness(eps=0.5, norm="l2", min_accuracy=0.5)
        def test_call_overrides_marker(robustness_evaluator, linear):
            report = robustness_evaluator(*linear, eps=[0.1], norm="linf", attacks=["pgd"], min_accuracy=0.8)
            assert report.norm == "linf" and report.epsilons == [0.1] and list(report.by_attack) == ["pgd"]

        @pytest.mark.robustness(0.2, min_accuracy=0.7)
        class TestClassMarker:
            def test_positional_eps_on_a_class(self, robustness_evaluator, linear):
                robustness_evaluator(*linear)

        @pytest.mark.robustness(eps=0.1, budget=3)
        def test_unknown_key(robustness_evaluator):
            pass

        def test_no_budget(robustness_evaluator, linear):
            robustness_evaluator(*linear)
    """)
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*test_positional_eps_on_a_class*", "*60.0% (0.6) at linf eps=0.2 is below min_accuracy=0.7*",
    ])
    result.stdout.fnmatch_lines(["*InputError: @pytest.mark.robustness does not take budget*"])
    result.stdout.fnmatch_lines(["*InputError: no budget for test_marker.py::test_no_budget*"])


def test_marker_takes_norm_l1(pytester: pytest.Pytester) -> None:
    """In L1 the linear model's point i needs a perturbation of 4 * m_i (four features move the mean):
    at eps 0.8 the margins below 0.2 break, 4 of 10; FGSM-L1 is exact on a linear model."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_l1="""
        import pytest

        @pytest.mark.robustness(eps=0.8, norm="l1", preset="fgsm", min_accuracy=0.5)
        def test_l1(robustness_evaluator, linear):
            report = robustness_evaluator(*linear)
            assert report.norm == "l1" and report.worst_case == pytest.approx(0.6)

        @pytest.mark.robustness(eps=0.8, norm="l1", min_accuracy=0.7)
        def test_l1_gate(robustness_evaluator, linear):
            robustness_evaluator(*linear, attacks=["pgd"])
    """)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*60.0% (0.6) at l1 eps=0.8 is below min_accuracy=0.7*"])


def test_markers_on_module_class_and_function_merge_key_by_key(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_merge="""
        import pytest

        pytestmark = pytest.mark.robustness(eps=0.2, norm="linf", preset="fgsm")

        @pytest.mark.robustness(min_accuracy=0.5)
        def test_module_budget_function_gate(robustness_evaluator, linear):
            report = robustness_evaluator(*linear)
            assert report.epsilons == [0.2] and list(report.by_attack) == ["fgsm"]

        @pytest.mark.robustness(eps=0.5, norm="l2")
        class TestClass:
            @pytest.mark.robustness(min_accuracy=0.7)
            def test_closest_wins(self, robustness_evaluator, linear):
                robustness_evaluator(*linear)
    """)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)  # the class's l2 eps=0.5 with the method's bar of 0.7 fails
    result.stdout.fnmatch_lines(["*test_closest_wins*", "*at l2 eps=0.5 is below min_accuracy=0.7*"])


def test_preset_comes_from_the_command_line_unless_the_marker_names_one(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_preset="""
        import json, pytest

        def test_default(robustness_evaluator, linear):
            with open("attacks.json", "w") as f:
                json.dump(list(robustness_evaluator(*linear, eps=0.1).by_attack), f)

        @pytest.mark.robustness(preset="pgd")
        def test_marker(robustness_evaluator, linear):
            assert list(robustness_evaluator(*linear, eps=0.1).by_attack) == ["pgd"]
    """)
    attacks = pytester.path / "attacks.json"
    run(pytester).assert_outcomes(passed=2)
    assert json.loads(attacks.read_text()) == ["fgsm", "pgd"]  # smoke
    run(pytester, "--robustness-preset", "fgsm").assert_outcomes(passed=2)
    assert json.loads(attacks.read_text()) == ["fgsm"]
    run(pytester, "--robustness-preset", "pgd,fgsm").assert_outcomes(passed=2)
    assert json.loads(attacks.read_text()) == ["pgd", "fgsm"]
    result = run(pytester, "--robustness-preset", "smoke,no-such-attack")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robustness-preset: unknown 'no-such-attack': give a preset or attacks among*"])


def test_report_directory_and_summary(robust_tests: pytest.Pytester) -> None:
    result = run(robust_tests, "--robustness-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    out = robust_tests.path / "out"
    for node in ("test_model.py::test_holds", "test_model.py::test_breaks"):
        saved = json.loads((out / sanitize_node_id(node) / "report.json").read_text())
        assert saved["seed"] == test_seed(0, node)  # the test's seed reached evaluate
        assert (out / sanitize_node_id(node) / "report.md").is_file()
        assert (out / sanitize_node_id(node) / "robust_accuracy.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["session_seed"] == 0 and summary["preset"] == "smoke" and summary["strict"] is False
    tests = {t["test"]: t for t in summary["tests"]}
    assert set(tests) == {"test_model.py::test_holds", "test_model.py::test_breaks"}
    holds, breaks = tests["test_model.py::test_holds"], tests["test_model.py::test_breaks"]
    assert holds["outcome"] == "passed" and breaks["outcome"] == "failed"
    (e,) = breaks["evaluations"]
    assert e["eps"] == 0.2 and e["worst_case_robust_accuracy"] == 0.6 and e["min_accuracy"] == 0.8
    assert e["gate_passed"] is False and e["attacks"] == ["fgsm", "pgd"] and e["norm"] == "linf"
    assert e["report_dir"] == sanitize_node_id("test_model.py::test_breaks")
    assert holds["evaluations"][0]["worst_case_robust_accuracy"] == 0.8
    assert not list(out.glob("*.tmp")) and not list(out.glob(".summary.json.*"))  # atomic: no leftovers
    result.stdout.fnmatch_lines([f"summary: {out / 'summary.json'}"])


def test_report_directory_from_the_ini_is_relative_to_it(robust_tests: pytest.Pytester) -> None:
    robust_tests.makeini("[pytest]\nrobustness_report = reports\n")
    sub = robust_tests.mkdir("elsewhere")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        run(robust_tests, str(robust_tests.path), "-k", "holds").assert_outcomes(passed=1, deselected=1)
    tests = json.loads((robust_tests.path / "reports" / "summary.json").read_text())["tests"]
    assert [t["test"] for t in tests] == ["test_model.py::test_holds"]


def test_two_evaluations_in_one_test_get_two_directories(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_two="""
        import pytest

        def test_two(robustness_evaluator, linear):
            robustness_evaluator(*linear, eps=0.1)
            robustness_evaluator(*linear, eps=0.3, norm="linf")

        @pytest.mark.xfail(reason="known weakness", strict=True)
        def test_known_weakness(robustness_evaluator, linear):
            robustness_evaluator(*linear, eps=0.3, min_accuracy=0.9)
    """)
    run(pytester, "--robustness-report", "out").assert_outcomes(passed=1, xfailed=1)
    base = sanitize_node_id("test_two.py::test_two")
    assert (pytester.path / "out" / base / "report.json").is_file()
    assert json.loads((pytester.path / "out" / f"{base}-2" / "report.json").read_text())["epsilons"] == [0.3]
    two, weak = json.loads((pytester.path / "out" / "summary.json").read_text())["tests"]
    assert [e["eps"] for e in two["evaluations"]] == [0.1, 0.3] and two["outcome"] == "passed"
    assert weak["outcome"] == "xfailed" and weak["evaluations"][0]["gate_passed"] is False


STRICT_TESTS = """
import pytest
from robustness import runner
from robustness.report import Check

@pytest.fixture
def warning_check(monkeypatch):
    real = runner.evaluate

    def evaluate(model, data, *, config):
        report = real(model, data, config=config)
        status = "failed" if config.strict else "warning"
        report.checks.append(Check("gradient-masking", status, "gradients vanish on 40% of the samples"))
        return report

    monkeypatch.setattr(runner, "evaluate", evaluate)

@pytest.mark.robustness(eps=0.1, min_accuracy=0.5)
def test_with_a_warning(robustness_evaluator, linear, warning_check):
    robustness_evaluator(*linear)

@pytest.mark.robustness(eps=0.1)
def test_without_min_accuracy(robustness_evaluator, linear, warning_check):
    robustness_evaluator(*linear)

@pytest.mark.robustness(eps=0.1, min_accuracy=0.5)
def test_clean_checks(robustness_evaluator, linear):
    robustness_evaluator(*linear)
"""


def test_strict_mode_fails_tests_whose_checks_warn(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_strict=STRICT_TESTS)
    run(pytester).assert_outcomes(passed=3)
    result = run(pytester, "--robustness-strict")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*strict mode: 1 sanity check did not pass: gradient-masking (failed)",
        "*checks that did not pass:",
        "*gradient-masking [[]failed]: gradients vanish on 40% of the samples",  # [[] escapes fnmatch's [
    ])
    pytester.makeini("[pytest]\nrobustness_strict = true\n")
    run(pytester).assert_outcomes(passed=1, failed=2)


def test_device_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_device="""
        import torch

        def test_device(robustness_device, request):
            expected = request.config.getoption("robustness_device") or "auto"
            if expected == "auto":
                expected = "cuda" if torch.cuda.is_available() else "cpu"
            assert robustness_device == torch.device(expected)
    """)
    run(pytester).assert_outcomes(passed=1)
    run(pytester, "--robustness-device", "cpu").assert_outcomes(passed=1)
    result = run(pytester, "--robustness-device", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robustness-device must be auto, cpu, cuda or cuda:N, got 'tpu'"])
    if not torch.cuda.is_available():
        result = run(pytester, "--robustness-device", "cuda:0")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*CUDA is not available*"])


def test_unrelated_tests_are_untouched(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="""
        import random

        def test_plain():
            random.seed(3)
            assert 1 + 1 == 2
    """)
    result = run(pytester, "--robustness-report", "out")
    result.assert_outcomes(passed=1)
    assert "- robustness -" not in result.stdout.str()
    assert json.loads((pytester.path / "out" / "summary.json").read_text())["tests"] == []


def test_sanitized_ids_are_directory_names() -> None:
    assert sanitize_node_id("tests/test_m.py::TestA::test_b[0.1-l2]") == "tests_test_m.py_TestA_test_b_0.1-l2"
    long = sanitize_node_id("t.py::test_" + "x" * 300)
    assert len(long) <= 120 and long != sanitize_node_id("t.py::test_" + "x" * 299)
    assert "/" not in sanitize_node_id("a/../../b::c") and ".." not in sanitize_node_id("../x")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib needs Python 3.11")
def test_entry_point_is_declared() -> None:
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["entry-points"]["pytest11"]
    assert declared == {"robustness": "robustness.pytest_plugin"}
