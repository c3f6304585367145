"""Adversarial robustness testing harness for PyTorch.

One entry point, :func:`evaluate`, used by Python code, the CLI and the pytest plugin;
it returns a :class:`Report`.
"""

from __future__ import annotations

from robustness.errors import InputError, RobustnessError, RobustnessWarning
from robustness.model import NormalizedModel
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
