"""Adversarial robustness testing harness for PyTorch.

One entry point, :func:`evaluate`, used by Python code, the CLI and the pytest plugin;
it returns a :class:`Report`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robustness.errors import InputError, RobustnessError, RobustnessWarning
from robustness.model import NormalizedModel

if TYPE_CHECKING:
    from robustness.report import Report
    from robustness.runner import evaluate

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "NormalizedModel",
    "Report",
    "RobustnessError",
    "RobustnessWarning",
    "__version__",
    "evaluate",
]


def __getattr__(name: str) -> Any:
    # The runner imports the attacks package, which imports robustness.norms and
    # robustness.errors: importing it lazily keeps that cycle out of package start-up.
    if name == "evaluate":
        from robustness.runner import evaluate

        return evaluate
    if name == "Report":
        from robustness.report import Report

        return Report
    raise AttributeError(f"module 'robustness' has no attribute {name!r}")
