"""Adversarial robustness testing harness for PyTorch.

One entry point, :func:`evaluate`, used by Python code, the CLI and the pytest plugin.
"""

from __future__ import annotations

from robustness.errors import InputError, RobustnessError, RobustnessWarning
from robustness.model import NormalizedModel

__version__ = "0.1.0"

__all__ = ["InputError", "NormalizedModel", "RobustnessError", "RobustnessWarning", "__version__"]
