"""Exceptions and warnings raised by the harness.

Every error that a user can cause derives from :class:`InputError`, so the CLI
can turn it into a one-line message and exit code 2 without a traceback.
"""

from __future__ import annotations

__all__ = ["RobustnessError", "InputError", "RobustnessWarning"]


class RobustnessError(Exception):
    """Base class of every exception this package raises on purpose."""


class InputError(RobustnessError, ValueError):
    """Bad input from the user: the message says what is wrong and what to do."""


class RobustnessWarning(UserWarning):
    """The evaluation ran, but its numbers may not be trustworthy."""
