"""EvalConfig: evaluate's settings as one validated object, and every CLI flag and plugin option reaching it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from robustness import cli, pytest_plugin, runner
from robustness.config import SETTINGS, EvalConfig
from robustness.errors import InputError
from robustness.model_info import ModelInfo
from robustness.report import Report
from tests.robustness.test_pytest_plugin import CONFTEST, run

pytest_plugins = ["pytester"]


def _linear_case() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        model.bias.zero_()
    x = torch.rand(12, 4, generator=torch.Generator().manual_seed(0))
    return model.eval(), (x, (x.mean(1) < 0.5).long())


# ----------------------------------------------------------------------------- the object


def test_settings_are_validated_and_normalized_when_built() -> None:
    config = EvalConfig(attacks="fgsm", epsilons=[0.2, 0, 0.2, 0.1], norm="LINF", device="cpu", state="s",
                        gradient_mode="NAIVE")
    assert config.attacks == ("fgsm",) and config.epsilons == (0.0, 0.1, 0.2) and config.budgets == [0.1, 0.2]
    assert config.norm == "linf" and config.gradient_mode == "naive"
    assert config.device == torch.device("cpu") and config.state == Path("s")
    assert list(config.named_attacks) == ["fgsm"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # type: ignore[misc]
    for bad, message in [({"epsilons": [-0.1]}, "finite number >= 0"), ({"norm": "l3"}, "unknown norm"),
                         ({"schedule": "random"}, "unknown schedule"), ({"attacks": ["pgdd"]}, "did you mean 'pgd'"),
                         ({"seed": 1.5}, "seed must be an integer"), ({"batch_size": 0}, "batch_size must be"),
                         ({"amp": "fp16"}, "amp='fp16' is not supported"), ({"compile": "yes"}, "compile must be")]:
        with pytest.raises(InputError, match=message):
            EvalConfig(**{"attacks": "fgsm", "epsilons": [0.1], **bad})
    with pytest.raises(InputError, match="unknown norm"):  # a replaced field is validated too
        dataclasses.replace(config, norm="l3")


def test_the_state_fingerprint_keeps_its_content() -> None:
    # what robustness.state's meta.json held before EvalConfig: a state written then must still resume
    config = EvalConfig(attacks=["fgsm"], epsilons=[0.1, 0], bounds=(0, 1), seed=4, schedule="bisect")
    assert config.fingerprint(batch_size=16) == {
        "norm": "linf", "bounds": [0.0, 1.0], "attacks": {"fgsm": "FGSM(norm='linf', loss='ce', eot_samples=1)"}, "seed": 4,
        "epsilons": [0.0, 0.1], "schedule": "bisect", "gradient_mode": "adaptive", "amp": None, "batch_size": 16,
    }


def test_evaluate_takes_a_config_keywords_or_both() -> None:
    model, data = _linear_case()
    by_keywords = runner.evaluate(model, data, attacks="fgsm", epsilons=[0, 0.1], progress=False, checks=False)
    config = EvalConfig(attacks="fgsm", epsilons=[0, 0.1], progress=False, checks=False)
    by_config = runner.evaluate(model, data, config)
    assert by_config.robust_accuracy == by_keywords.robust_accuracy and by_config.attacks == by_keywords.attacks
    l2 = runner.evaluate(model, data, config, norm="l2", epsilons=[0, 0.5])  # keywords replace fields
    assert l2.norm == "l2" and l2.epsilons == [0.0, 0.5] and config.norm == "linf"


def test_unknown_and_missing_keywords_are_type_errors_that_help() -> None:
    model, data = _linear_case()
    with pytest.raises(TypeError, match=r"evaluate\(\) got an unexpected keyword argument 'eps' "
                                        r"\(did you mean 'epsilons'\?\)"):
        runner.evaluate(model, data, attacks="fgsm", eps=0.1)
    with pytest.raises(TypeError, match=r"evaluate\(\) missing 2 required keyword-only arguments: 'attacks' and "
                                        r"'epsilons'"):
        runner.evaluate(model, data)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sed' \\(did you mean 'seed'\\?\\)"):
        runner.evaluate(model, data, EvalConfig(attacks="fgsm", epsilons=[0.1]), sed=1)


# ----------------------------------------------------------------------------- the CLI

#: EvalConfig field -> CLI arguments and the value they must put there (none is the default)
CLI_FLAGS = {
    "attacks": (["--attacks", "fgsm,PGD(steps=3)"], ("fgsm", "pgd(steps=3)")),
    "epsilons": (["--eps", "0.2,0,1/10"], (0.0, 0.1, 0.2)),
    "norm": (["--norm", "L2"], "l2"),
    "bounds": (["--data", "wide"], (-1.0, 1.0)),  # the data's declared range
    "batch_size": (["--batch-size", "33"], 33),
    "device": (["--device", "cpu"], torch.device("cpu")),
    "seed": (["--seed", "5"], 5),
    "progress": (["--quiet"], False),
    "checks": (["--no-checks"], False),
    "strict": (["--strict"], True),
    "schedule": (["--schedule", "bisect"], "bisect"),
    "state": (["--state", "run-state"], Path("run-state")),
    "amp": (["--amp", "bf16"], "bf16"),
    "channels_last": (["--channels-last"], True),
    "compile": (["--compile"], True),
    "distributed": (["TORCHRUN"], True),  # set under torchrun (and --nproc, which launches it)
    "cascade": (["--cascade"], True),
}
#: flags that turn a CLI_FLAGS flag off again, and the value they must put in its field
NEGATED_FLAGS = {"--no-cascade": ("cascade", False)}
#: EvalConfig fields that no CLI flag sets, and why
NOT_CLI_FLAGS = {
    "gradient_mode": "the CLI always attacks defenses adaptively (BPDA and EOT), the honest evaluation; "
                     "comparing with naive gradients is a Python-level experiment",
}
#: evaluate's flags that are not evaluation settings, and what they are
NOT_SETTINGS = {
    "--model", "--arch", "--mean", "--std",  # what to evaluate: the model
    "--weights", "--threat-model", "--model-dir", "--model-info",  # which weights a model source loads (timm:, torchvision:, ...)
    "--subset", "--corruptions", "--severities",  # which images (imagenet's subset; corruptions instead of attacks)
    "--data-dir", "--download", "--split", "--n",  # how to load the data (--data also gives the bounds)
    "--out", "--min-accuracy",  # where the report goes, and the exit-code gate on it
    "--format",  # what is written beside the report (robustbench.json)
    "--nproc", "--debug", "--verbose", "--help", "-h",  # how the command runs (--verbose: library logs)
}


@pytest.fixture
def cli_configs(monkeypatch):
    """Run ``robustness evaluate`` with the library stubbed; returns the EvalConfig of each evaluation."""
    seen: list[EvalConfig] = []

    def evaluate(model, data, *, config):
        seen.append(config)
        return Report(clean_accuracy=1.0, robust_accuracy={0.0: 1.0}, by_attack={"pgd": {0.0: 1.0}}, n_examples=4,
                      epsilons=[0.0], norm=config.norm, bounds=config.bounds, attacks={}, seed=0, batch_size=4,
                      device="cpu", versions={}, timings={"total": 0.1}, max_perturbation={}, num_classes=2)

    def load_dataset(name, **kw):
        return SimpleNamespace(name=name, dataset="D", num_classes=2, input_shape=(1, 8, 8),
                               bounds=(-1.0, 1.0) if name == "wide" else (0.0, 1.0))

    @contextlib.contextmanager
    def torchrun_session(device):
        yield device, (SimpleNamespace(rank=0) if torchrun else None)

    torchrun = False
    monkeypatch.setattr(cli.runner, "evaluate", evaluate)
    monkeypatch.setattr(cli.datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(cli.loading, "load_model", lambda spec, **kw: SimpleNamespace(
        model="M", source=spec, info=ModelInfo(source=spec), warnings=[]))
    monkeypatch.setattr(cli, "torchrun_session", torchrun_session)
    monkeypatch.setattr(Report, "save", lambda self, out: Path(out))

    def config_of(args: list[str]) -> EvalConfig:
        nonlocal torchrun
        torchrun = "TORCHRUN" in args
        seen.clear()
        argv = ["evaluate", "--model", "m.pt", "--attacks", "pgd", "--eps", "0,0.1"]
        assert cli.main(argv + [a for a in args if a != "TORCHRUN"]) == 0
        (config,) = seen
        return config

    return config_of


def test_every_cli_flag_reaches_its_evalconfig_field(cli_configs, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert set(CLI_FLAGS) | set(NOT_CLI_FLAGS) == set(SETTINGS), "map every EvalConfig field to a flag, or say why not"
    default = cli_configs([])
    for name, (args, expected) in CLI_FLAGS.items():
        assert getattr(cli_configs(args), name) == expected, f"{' '.join(args)} did not set {name}"
        if name != "device":  # --device auto is the CPU here too
            assert getattr(default, name) != expected, f"{name}: pick a value other than the default"
    for flag, (name, expected) in NEGATED_FLAGS.items():
        assert getattr(cli_configs([flag]), name) == expected, f"{flag} did not set {name}"


def test_every_evaluate_flag_is_a_setting_or_says_what_else_it_is() -> None:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    flags = {s for action in sub.choices["evaluate"]._actions for s in action.option_strings}
    used = {a for args, _ in CLI_FLAGS.values() for a in args if a.startswith("-")} | set(NEGATED_FLAGS)
    assert flags - used - NOT_SETTINGS == set(), "a new evaluate flag must reach EvalConfig (CLI_FLAGS) or be listed"
    assert NOT_SETTINGS <= flags


# ----------------------------------------------------------------------------- the pytest plugin

#: the plugin's command-line options and marker keys that carry a setting, and the field each sets
PLUGIN_OPTIONS = {"--robustness-seed": "seed", "--robustness-device": "device", "--robustness-preset": "attacks",
                  "--robustness-strict": "strict"}
PLUGIN_NOT_SETTINGS = {"--robustness-report"}  # where the reports are saved
MARKER_KEYS = {"eps": "epsilons", "norm": "norm", "preset": "attacks"}
MARKER_NOT_SETTINGS = {"min_accuracy"}  # the gate applied to the report

PLUGIN_TESTS = """
import json
from pathlib import Path

import pytest
from robustness import runner


@pytest.fixture
def record(monkeypatch, request, robustness_seed):
    real = runner.evaluate

    def evaluate(model, data, *, config):
        fields = {k: getattr(config, k) for k in ("seed", "strict", "attacks", "epsilons", "norm", "batch_size",
                                                   "progress")}
        fields.update(device=str(config.device), test_seed=robustness_seed)
        Path(request.node.name + ".json").write_text(json.dumps(fields))
        return real(model, data, config=config)

    monkeypatch.setattr(runner, "evaluate", evaluate)


@pytest.mark.robustness(eps=[0.2, 0.1], norm="L2", preset="pgd(steps=2)")
def test_marked(robustness_evaluator, linear, record):
    robustness_evaluator(*linear, checks=False)


@pytest.mark.robustness(eps=0.1)
def test_options(robustness_evaluator, linear, record):
    robustness_evaluator(*linear, batch_size=3, checks=False)
"""


def test_every_plugin_option_and_marker_key_reaches_its_evalconfig_field(pytester: pytest.Pytester) -> None:
    options: list[str] = []
    group = SimpleNamespace(addoption=lambda *names, **kw: options.extend(names))
    pytest_plugin.pytest_addoption(SimpleNamespace(getgroup=lambda *a: group, addini=lambda *a, **kw: None))
    assert set(options) == set(PLUGIN_OPTIONS) | PLUGIN_NOT_SETTINGS, "map every plugin option to a field, or say why"
    assert set(pytest_plugin._MARKER_KEYS) == set(MARKER_KEYS) | MARKER_NOT_SETTINGS
    assert set(PLUGIN_OPTIONS.values()) | set(MARKER_KEYS.values()) <= set(SETTINGS)

    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=PLUGIN_TESTS)
    run(pytester, "--robustness-seed", "7", "--robustness-device", "cpu", "--robustness-preset", "fgsm",
        "--robustness-strict").assert_outcomes(passed=2)
    marked = json.loads((pytester.path / "test_marked.json").read_text())
    options = json.loads((pytester.path / "test_options.json").read_text())
    assert marked["epsilons"] == [0.1, 0.2] and marked["norm"] == "l2"  # the marker's eps and norm
    assert marked["attacks"] == ["pgd(steps=2)"] and options["attacks"] == ["fgsm"]  # marker preset, else option
    for name, fields in (("test_marked", marked), ("test_options", options)):
        # --robustness-seed, through the test's own seed; --robustness-device and --robustness-strict
        assert fields["seed"] == fields["test_seed"] == pytest_plugin.test_seed(7, f"test_inner.py::{name}")
        assert fields["device"] == "cpu" and fields["strict"] is True and fields["progress"] is False
    assert options["batch_size"] == 3 and marked["batch_size"] is None  # the evaluator's keywords
