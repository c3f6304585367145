"""Adversarial robustness testing harness for PyTorch.

One entry point, :func:`evaluate`, used by Python code, the CLI and the pytest plugin;
it takes its settings as keywords or as one :class:`EvalConfig` and returns a :class:`Report`.
:func:`assert_robust` and :func:`assert_attack_succeeds` gate on it in tests.
:func:`load_model` loads a model by name (``"digits-cnn"``, ``"digits-cnn-at"``: the shipped ones);
:func:`compare_samples` compares two reports sample by sample.

Everything that needs torch is imported on first use, so that loading the pytest plugin (which
imports this package at every pytest start) costs nothing until a robustness test runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from robustness.errors import InputError, RobustnessError, RobustnessWarning

if TYPE_CHECKING:
    from robustness.config import EvalConfig
    from robustness.model import NormalizedModel
    from robustness.named_models import load_model
    from robustness.samples import SampleComparison, SampleResult, compare_samples
    from robustness.report import Report
    from robustness.runner import evaluate
    from robustness.testing import RobustnessAssertionError, assert_attack_succeeds, assert_robust

__version__ = "0.1.0"

__all__ = [
    "EvalConfig",
    "InputError",
    "NormalizedModel",
    "Report",
    "RobustnessAssertionError",
    "RobustnessError",
    "RobustnessWarning",
    "__version__",
    "assert_attack_succeeds",
    "SampleComparison",
    "SampleResult",
    "assert_robust",
    "compare_samples",
    "evaluate",
    "load_model",
]

_LAZY = {
    "evaluate": "robustness.runner",
    "EvalConfig": "robustness.config",
    "Report": "robustness.report",
    "NormalizedModel": "robustness.model",
    "assert_robust": "robustness.testing",
    "assert_attack_succeeds": "robustness.testing",
    "RobustnessAssertionError": "robustness.testing",
    "load_model": "robustness.named_models",
    "compare_samples": "robustness.samples",
    "SampleResult": "robustness.samples",
    "SampleComparison": "robustness.samples",
}


def __getattr__(name: str) -> Any:
    # lazily: the runner imports the attacks package, which imports robustness.norms and
    # robustness.errors, and torch is slow to import
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robustness' has no attribute {name!r}")
