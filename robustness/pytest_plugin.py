"""pytest plugin: robustness tests in CI, reproducible by seed, with reports on disk.

Loaded through the ``pytest11`` entry point ``robustness`` (disable with ``-p no:robustness``).

* Options (group "robustness"; each also an ini key, ``robustness_seed`` and so on; the
  command line wins): ``--robustness-seed N`` (default 0, printed in the header),
  ``--robustness-device auto|cpu|cuda|cuda:N`` (auto: CUDA when available, else CPU),
  ``--robustness-preset NAME`` (default ``smoke``), ``--robustness-report DIR`` and
  ``--robustness-strict``.
* Marker ``@pytest.mark.robustness(eps=..., norm="linf", preset=None, min_accuracy=None)``:
  defaults for the ``robustness_evaluator`` fixture. Markers on the module, class and function
  merge key by key, the closest winning (a module's ``eps`` with a function's ``min_accuracy``).
* Fixtures: ``robustness_seed`` (this test's seed), ``robustness_device`` (a ``torch.device``),
  ``robustness_evaluator`` (a :class:`RobustnessEvaluator`).

Seeding. A test that carries the marker or uses one of the fixtures (directly or through
another fixture) is a *robustness test*: its seed is derived from the session seed and its
node id with SHA-256 (:func:`test_seed`), so it is the same in every run and in a run of that
test alone, and differs between tests. Python's ``random``, NumPy's global RNG and torch
(CPU, and CUDA) are seeded with it before the test's fixtures are set up and again before
its body runs, and the RNG states are put back as they were after its teardown, so the
plugin leaves every other test's randomness alone. Other tests are not touched at all.

Reports. With ``--robustness-report DIR`` each evaluation of the evaluator fixture is saved
to ``DIR/<sanitised test id>/`` (``report.json``, ``report.md``, ``robust_accuracy.png``),
and at the end of the session ``DIR/summary.json`` lists every evaluation's worst-case
figures and its test's outcome, written atomically. The figures travel with the test
reports (``user_properties``, so junitxml records them too), which pytest-xdist's workers
send to the controller: the controller writes one complete summary.

Example::

    @pytest.mark.robustness(eps=[0.05, 0.1], min_accuracy=0.8)
    def test_model_is_robust(robustness_evaluator, model, data):
        report = robustness_evaluator(model, data)     # fails with the report table if below 80%
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import torch

    from robustness.report import Report

__all__ = ["RobustnessEvaluator", "RobustnessSettings", "sanitize_node_id", "test_seed"]

log = logging.getLogger(__name__)

MARKER = "robustness"
FIXTURES = frozenset({"robustness_seed", "robustness_device", "robustness_evaluator"})
_PROPERTY = "robustness"  # user_properties key carrying one evaluation's figures (JSON text)
_MARKER_KEYS = ("eps", "norm", "preset", "min_accuracy")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass
class RobustnessSettings:
    """The session's settings and what it collected (kept in ``config.stash``)."""

    seed: int
    device: str
    preset: str
    strict: bool
    report_dir: Path | None
    resolved_device: str | None = None
    used_dirs: set[str] = field(default_factory=set)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # nodeid -> outcome and evaluations
    summary_path: Path | None = None


SETTINGS = pytest.StashKey[RobustnessSettings]()
_SAVED_RNG = pytest.StashKey[dict[str, Any]]()


def test_seed(session_seed: int, node_id: str) -> int:
    """The seed of the test ``node_id``: stable across runs and processes, in ``[0, 2**32)``
    (``numpy.random.seed`` takes 32 bits), from :func:`robustness.seeding.derive_seed`."""
    from robustness.seeding import derive_seed

    return derive_seed(session_seed, "pytest-test", node_id, bits=32)


test_seed.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def sanitize_node_id(node_id: str) -> str:
    """A directory name for a test id: ``tests/t.py::test_a[0.1]`` -> ``tests_t.py_test_a_0.1``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", node_id).strip("._-") or "test"
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha256(node_id.encode()).hexdigest()[:12]}"
    return name


# ----------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustness", "robustness testing (robustness-harness)")
    group.addoption("--robustness-seed", type=int, default=None, metavar="N",
                    help="session seed; each robustness test is seeded from it and its test id (default 0)")
    group.addoption("--robustness-device", default=None, metavar="DEVICE",
                    help="auto, cpu, cuda or cuda:N; auto uses CUDA when available, else the CPU (default auto)")
    group.addoption("--robustness-preset", default=None, metavar="NAME",
                    help="attacks the evaluator uses when a test names none: a preset (smoke, standard) or "
                         "comma-separated attacks as the CLI's --attacks (default smoke)")
    group.addoption("--robustness-report", default=None, metavar="DIR",
                    help="save each robustness test's report under DIR/<test id>/ and DIR/summary.json")
    group.addoption("--robustness-strict", action="store_true", default=None,
                    help="a sanity check that warns fails the test")
    parser.addini("robustness_seed", "session seed of robustness tests (default 0)", default="0")
    parser.addini("robustness_device", "auto, cpu, cuda or cuda:N (default auto)", default="auto")
    parser.addini("robustness_preset", "attacks of the evaluator by default (default smoke)", default="smoke")
    parser.addini("robustness_report", "directory for robustness reports, relative to the ini file", default="")
    parser.addini("robustness_strict", "a sanity check that warns fails the test", type="bool", default=False)


def _check_preset(preset: str) -> None:
    """A typo in ``--robustness-preset`` is a usage error, not one failure per test."""
    from robustness.attacks.presets import PRESETS
    from robustness.cli import split_attack_list
    from robustness.errors import InputError
    from robustness.registry import ATTACKS

    try:
        names = split_attack_list(preset)
        unknown = [n for n in names if not n.startswith("art:") and n not in PRESETS and n not in ATTACKS]
    except InputError as err:
        raise pytest.UsageError(f"--robustness-preset: {err}") from None
    if not names or unknown:
        known = ", ".join(sorted(PRESETS) + ATTACKS.list())
        raise pytest.UsageError(
            f"--robustness-preset: unknown {', '.join(map(repr, unknown)) or 'empty list'}: "
            f"give a preset or attacks among {known} (comma-separated)"
        )


def _settings(config: pytest.Config) -> RobustnessSettings:
    seed = config.getoption("robustness_seed")
    if seed is None:
        text = str(config.getini("robustness_seed")).strip()
        try:
            seed = int(text)
        except ValueError:
            raise pytest.UsageError(f"robustness_seed must be an integer, got {text!r}") from None
    if not 0 <= seed < 2**63:
        raise pytest.UsageError(f"the robustness seed must lie in [0, 2**63), got {seed}")
    device = (config.getoption("robustness_device") or str(config.getini("robustness_device"))).strip().lower()
    if not _DEVICE.match(device):
        raise pytest.UsageError(f"--robustness-device must be auto, cpu, cuda or cuda:N, got {device!r}")
    preset = (config.getoption("robustness_preset") or str(config.getini("robustness_preset"))).strip()
    if preset.lower() != "smoke":  # the default needs no check (and no torch import at start-up)
        _check_preset(preset)
    report = config.getoption("robustness_report")
    if report:
        report_dir: Path | None = Path(config.invocation_params.dir, report)
    else:
        ini = str(config.getini("robustness_report")).strip()
        base = config.inipath.parent if config.inipath else config.rootpath
        report_dir = Path(base, ini) if ini else None
    strict = config.getoption("robustness_strict")
    if strict is None:
        strict = bool(config.getini("robustness_strict"))
    return RobustnessSettings(seed=seed, device=device, preset=preset, strict=strict, report_dir=report_dir)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(eps=None, norm='linf', preset=None, min_accuracy=None): a robustness test; defaults "
        "for the robustness_evaluator fixture; the test is seeded from --robustness-seed and its id",
    )
    settings = config.stash[SETTINGS] = _settings(config)
    if settings.device.startswith("cuda"):
        _resolve_device(settings)  # a CUDA device that is not there is a usage error, before any test
    config.pluginmanager.register(_Collector(config), _COLLECTOR)


def pytest_unconfigure(config: pytest.Config) -> None:
    collector = config.pluginmanager.get_plugin(_COLLECTOR)
    if collector is not None:
        config.pluginmanager.unregister(collector)


def _resolve_device(settings: RobustnessSettings) -> str:
    if settings.resolved_device is None:
        import torch

        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            if not torch.cuda.is_available():
                raise pytest.UsageError(f"--robustness-device={device} but CUDA is not available: use cpu or auto")
            if index >= torch.cuda.device_count():
                raise pytest.UsageError(
                    f"--robustness-device={device} but only {torch.cuda.device_count()} CUDA device(s) exist"
                )
        settings.resolved_device = device
    return settings.resolved_device


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash[SETTINGS]
    if s.device == "auto" and "torch" not in sys.modules:  # a session without torch does not pay its import
        shown = "auto (CUDA when available, else CPU)"
    else:
        device = _resolve_device(s)
        shown = device if s.device == device else f"{device} ({s.device})"
    strict = "on" if s.strict else "off"
    line = f"robustness: --robustness-seed={s.seed}, device {shown}, preset {s.preset}, strict {strict}"
    if s.report_dir is not None:
        line += f", reports in {s.report_dir}"
    return [line]


# ----------------------------------------------------------------------------- seeding


def _is_robustness_test(item: pytest.Item) -> bool:
    if item.get_closest_marker(MARKER) is not None:
        return True
    return bool(FIXTURES.intersection(getattr(item, "fixturenames", ())))


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not _is_robustness_test(item):
        return
    import numpy as np
    import torch

    saved: dict[str, Any] = {"random": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        saved["cuda"] = torch.cuda.get_rng_state_all()
    item.stash[_SAVED_RNG] = saved
    _seed_everything(test_seed(item.config.stash[SETTINGS].seed, item.nodeid))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    if _SAVED_RNG in item.stash:  # reseed: the body's draws do not depend on what fixtures drew
        _seed_everything(test_seed(item.config.stash[SETTINGS].seed, item.nodeid))


@pytest.hookimpl(hookwrapper=True)  # old-style wrapper: works with every pluggy that pytest>=7.4 allows
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    yield  # fixtures are torn down (still seeded); then the RNG states are put back, even on error
    saved = item.stash.get(_SAVED_RNG, None)
    if saved is not None:
        import numpy as np
        import torch

        del item.stash[_SAVED_RNG]
        random.setstate(saved["random"])
        np.random.set_state(saved["numpy"])
        torch.set_rng_state(saved["torch"])
        if "cuda" in saved:
            torch.cuda.set_rng_state_all(saved["cuda"])


# ----------------------------------------------------------------------------- fixtures


def _marker_settings(item: pytest.Item) -> dict[str, Any]:
    from robustness.errors import InputError

    merged: dict[str, Any] = {}
    for marker in reversed(list(item.iter_markers(MARKER))):  # module, then class, then function: closest wins
        if len(marker.args) > 1:
            raise InputError(f"@pytest.mark.{MARKER} takes at most one positional argument (eps), got "
                             f"{marker.args!r}")
        kwargs = dict(marker.kwargs)
        if marker.args:
            if "eps" in kwargs:
                raise InputError(f"@pytest.mark.{MARKER}: eps given both positionally and as eps=")
            kwargs["eps"] = marker.args[0]
        unknown = sorted(set(kwargs) - set(_MARKER_KEYS))
        if unknown:
            raise InputError(
                f"@pytest.mark.{MARKER} does not take {', '.join(unknown)}: it takes {', '.join(_MARKER_KEYS)}"
            )
        merged.update({k: v for k, v in kwargs.items() if v is not None})
    return merged


class RobustnessEvaluator:
    """``evaluator(model, data, *, eps=None, norm=None, attacks=None, min_accuracy=None, **kwargs)``.

    Builds one :class:`robustness.EvalConfig` and runs :func:`robustness.evaluate` with it: for
    each setting, the call's argument, else the test's ``robustness`` marker, else the command
    line (ini) options: ``eps`` (required from the call or the marker), ``norm`` (default
    ``"linf"``), ``attacks`` (the marker's ``preset``, else ``--robustness-preset``),
    ``min_accuracy`` (none: no accuracy gate), and always the test's seed, the session device and
    ``--robustness-strict`` (a call may override ``seed=``, ``device=`` or ``strict=``, and pass
    any other ``EvalConfig`` field). Saves the report under ``--robustness-report`` when given,
    then applies :func:`robustness.testing.verify_robust`:
    fails below ``min_accuracy`` and, when strict, when a check did not pass.
    """

    def __init__(self, item: pytest.Item, seed: int, device: str) -> None:
        self._item = item
        self._settings = item.config.stash[SETTINGS]
        self.marker = _marker_settings(item)
        self.seed = seed
        self.device = device
        self.reports: list[Report] = []

    def __call__(
        self,
        model: Any,
        data: Any,
        *,
        eps: Any = None,
        norm: str | None = None,
        attacks: Any = None,
        min_accuracy: float | None = None,
        **kwargs: Any,
    ) -> Report:
        __tracebackhide__ = True
        from robustness import runner
        from robustness.config import make_config
        from robustness.errors import InputError
        from robustness.testing import _fraction, verify_robust

        eps = eps if eps is not None else self.marker.get("eps")
        if eps is None:
            raise InputError(
                f"no budget for {self._item.nodeid}: call the evaluator with eps=... or mark the test "
                f"@pytest.mark.{MARKER}(eps=...)"
            )
        norm = norm or self.marker.get("norm", "linf")
        if attacks is None:
            from robustness.cli import split_attack_list  # the CLI's --attacks syntax: one meaning

            preset = self.marker.get("preset", self._settings.preset)
            attacks = split_attack_list(preset) if isinstance(preset, str) else preset
        if min_accuracy is None:
            min_accuracy = self.marker.get("min_accuracy")
        threshold = None if min_accuracy is None else _fraction(min_accuracy, "min_accuracy")
        if "epsilons" in kwargs:
            raise InputError("pass the budgets as eps=..., not epsilons=...")
        session = {"seed": self.seed, "device": self.device, "strict": self._settings.strict, "progress": False}
        config = make_config(None, {**session, **kwargs, "attacks": attacks, "epsilons": eps, "norm": norm},
                             caller="robustness_evaluator")
        report = runner.evaluate(model, data, config=config)
        if report.model is not None and report.model.source is None:
            report.model.source = f"{type(model).__name__} in {self._item.nodeid}"
        self.reports.append(report)
        saved = self._save(report)
        try:
            verify_robust(report, min_accuracy=threshold, strict=config.strict, title="robustness test failed")
        except AssertionError:
            self._record(report, threshold, saved, strict=config.strict, passed=False)
            raise
        self._record(report, threshold, saved, strict=config.strict, passed=True)
        return report

    def _save(self, report: Report) -> str | None:
        root = self._settings.report_dir
        if root is None:
            return None
        base = name = sanitize_node_id(self._item.nodeid)
        k = 2
        while name in self._settings.used_dirs:
            name, k = f"{base}-{k}", k + 1
        self._settings.used_dirs.add(name)
        report.save(root / name)
        log.info("robustness report of %s saved to %s", self._item.nodeid, root / name)
        return name

    def _record(self, report: Report, threshold: float | None, saved: str | None, *, strict: bool,
                passed: bool) -> None:
        from robustness.testing import robust_fraction

        eps = max(report.robust_accuracy)
        entry = {
            "report_dir": saved,
            "norm": report.norm,
            "eps": eps,
            "epsilons": report.epsilons,
            "attacks": list(report.by_attack),
            "n_examples": report.n_examples,
            "clean_accuracy": report.clean_accuracy,
            "worst_case_robust_accuracy": robust_fraction(report, eps),
            "robust_accuracy": {repr(float(e)): a for e, a in sorted(report.robust_accuracy.items())},
            "min_accuracy": threshold,
            "gate_passed": passed,
            "checks_not_passed": [c.to_dict() for c in report.checks if c.status not in ("passed", "skipped")],
            "seed": report.seed,
            "device": report.device,
            "strict": strict,
        }
        self._item.user_properties.append((_PROPERTY, json.dumps(entry)))


@pytest.fixture
def robustness_seed(request: pytest.FixtureRequest) -> int:
    """This test's seed: derived from ``--robustness-seed`` and the test id (stable across runs)."""
    return test_seed(request.config.stash[SETTINGS].seed, request.node.nodeid)


@pytest.fixture
def robustness_device(request: pytest.FixtureRequest) -> torch.device:
    """The device of ``--robustness-device`` (auto: CUDA when available, else the CPU)."""
    import torch

    return torch.device(_resolve_device(request.config.stash[SETTINGS]))


@pytest.fixture
def robustness_evaluator(
    request: pytest.FixtureRequest, robustness_seed: int, robustness_device: torch.device
) -> RobustnessEvaluator:
    """A :class:`RobustnessEvaluator` bound to this test's marker, seed and the session options."""
    return RobustnessEvaluator(request.node, robustness_seed, str(robustness_device))


# ----------------------------------------------------------------------------- summary


class _Collector:
    """Collects each robustness test's figures from its reports; writes summary.json at the end.

    A plugin object registered per session: the hooks below receive no config, and the
    figures arrive through the test reports, which under pytest-xdist reach the controller.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entries = [json.loads(str(v)) for k, v in report.user_properties if k == _PROPERTY]
        results = self.config.stash[SETTINGS].results
        if not entries and report.nodeid not in results:
            return
        result = results.setdefault(report.nodeid, {"test": report.nodeid, "outcome": "passed", "evaluations": []})
        if entries:  # each phase's report carries every evaluation so far: keep the latest list
            result["evaluations"] = entries
        if hasattr(report, "wasxfail") and report.when == "call":
            result["outcome"] = "xfailed" if report.skipped else "xpassed"
        elif report.failed and report.when == "call":
            result["outcome"] = "failed"
        elif result["outcome"] == "passed" and (report.failed or report.skipped):
            result["outcome"] = "error" if report.failed else "skipped"  # in setup or teardown

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        s = self.config.stash[SETTINGS]
        if s.report_dir is None or hasattr(self.config, "workerinput"):  # xdist workers: the controller writes
            return
        from robustness.io import atomic_write_text, json_text

        summary = {
            "session_seed": s.seed,
            "device": s.resolved_device or s.device,
            "preset": s.preset,
            "strict": s.strict,
            "tests": list(s.results.values()),
        }
        s.summary_path = s.report_dir / "summary.json"
        atomic_write_text(s.summary_path, json_text(summary, indent=2))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        s = self.config.stash[SETTINGS]
        if not s.results or hasattr(self.config, "workerinput"):
            return
        terminalreporter.write_sep("-", "robustness")
        for result in s.results.values():
            for e in result["evaluations"]:
                gate = "" if e["min_accuracy"] is None else f" (min {100 * e['min_accuracy']:.1f}%)"
                terminalreporter.write_line(
                    f"{result['outcome'].upper():7} {result['test']}: worst case "
                    f"{100 * e['worst_case_robust_accuracy']:.1f}% at {e['norm']} eps={e['eps']:.6g}{gate}"
                )
        if s.summary_path is not None:
            terminalreporter.write_line(f"summary: {s.summary_path}")


_COLLECTOR = "robustness-collector"
