"""Argument helpers that ``robustness evaluate`` and ``robustness train`` share: budgets and
their labels, number lists (``--mean``/``--std``), bounded integers, ``--device``, ``--seed``,
``--nproc`` and the writability of an output path. Each raises :class:`robustness.errors.InputError`
(or argparse's ``ArgumentTypeError``) with what to type instead: a value that overflows a float
(``1e400``) or an integer beyond 64 bits is an input error, never an ``OverflowError``; an empty
list or an empty item in one (``0.1,,0.2``: an unset shell variable) is an error, never dropped.

Example::

    parse_epsilons("0,2/255,8/255")  # [0.0, 0.00784..., 0.03137...]
    epsilon_labels("0,2/255,8/255")  # {0.00784...: "2/255", 0.03137...: "8/255"}
    parse_floats("0.5,0.25", "--std")  # [0.5, 0.25]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from robustness.errors import InputError

__all__ = ["add_nproc", "check_writable", "epsilon_labels", "float_type", "int_type", "naming", "parse_device",
           "parse_epsilons", "parse_floats", "parse_seed"]

#: the largest integer a flag takes: torch and Python's C code read sizes as signed 64-bit integers
INT64_MAX = 2**63 - 1
#: the most processes (``--nproc``) or threads (``train --threads``) a flag asks for on one machine
MAX_PROCESSES = 1024


def parse_epsilons(text: str) -> list[float]:
    """``"0,2/255,0.1"`` -> ``[0.0, 0.00784..., 0.1]``; raises :class:`InputError` on bad values."""
    return [value for _, value in _budget_items(text)]


def epsilon_labels(text: str) -> dict[float, str]:
    """The budgets of ``text`` written as fractions, as the user wrote them: ``"0,8/255"`` ->
    ``{0.0313...: "8/255"}``. Reports print these labels instead of ``0.0313725`` (presentation only:
    the evaluation and its fingerprint use the floats); the first spelling of a budget wins."""
    labels: dict[float, str] = {}
    for part, value in _budget_items(text):
        if "/" in part:
            labels.setdefault(value, "".join(part.split()))
    return labels


def _budget_items(text: str) -> list[tuple[str, float]]:
    """``--eps`` as ``(text, value)`` pairs: numbers >= 0, fractions allowed."""
    items = _float_items(text, "--eps", example="0,2/255,8/255")
    negative = [v for _, v in items if v < 0]
    if negative:
        raise InputError(f"--eps: budgets must be >= 0, got {negative[0]:g}")
    return items


def parse_floats(text: str, flag: str) -> list[float]:
    """``"0.5, 1/4"`` -> ``[0.5, 0.25]`` for ``flag``; non-numbers, non-finite values, an empty
    ``text`` and empty items (``0.5,,0.25``) are input errors."""
    return [value for _, value in _float_items(text, flag, example="0.5,0.25")]


def _float_items(text: str, flag: str, *, example: str) -> list[tuple[str, float]]:
    if not text.strip():
        raise InputError(f"{flag} is empty (an unset shell variable?): give numbers, e.g. {flag} {example}")
    items = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise InputError(f"{flag}: empty item in {text!r} (a doubled or trailing comma?): give numbers "
                             f"separated by single commas, e.g. {flag} {example}")
        try:
            value = float(Fraction(part))
        except OverflowError:
            raise InputError(f"{flag}: {part!r} is too large for a float; give finite numbers") from None
        except (ValueError, ZeroDivisionError):
            raise InputError(f"{flag}: {part!r} is not a number; give numbers, e.g. {example}") from None
        if not math.isfinite(value):  # unreachable through Fraction, kept for safety
            raise InputError(f"{flag}: {part!r} is not finite; give finite numbers")
        items.append((part, value))
    return items


def int_type(low: int, high: int = INT64_MAX) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` (argparse names the flag in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            upper = f" and <= {high}" if high != INT64_MAX else " and below 2**63"
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}{upper}, got {text}")
        return value
    return parse


def float_type(what: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse ``type``: a finite float for which ``ok`` holds, else "expected ``what``" (argparse
    names the flag): ``float_type("a number > 0", lambda v: v > 0)``. NaN and infinities never pass."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    return parse


@contextmanager
def naming(flag: str, value: object) -> Iterator[None]:
    """An :class:`InputError` raised inside names ``flag`` (and ``value``, when it does not quote it):
    ``unknown torchvision model 'x'`` becomes ``--model torchvision:x: unknown torchvision model 'x'``.
    A message that names a flag already is left as it is."""
    try:
        yield
    except InputError as e:
        text = str(e)
        if re.search(r"(?<![\w-])--[a-z]", text):
            raise
        raise InputError(f"{flag}: {text}" if str(value) in text else f"{flag} {value}: {text}") from e


def check_writable(path: Path, flag: str, *, file: bool = False) -> None:
    """Files can be created in the directory ``path`` (or, with ``file``, beside the file ``path``):
    checked before any work by creating and removing a probe file in that directory or its nearest
    existing parent, since permission bits do not tell (root passes ``os.access`` on ``/proc``, and a
    read-only mount passes it too). Nothing is left behind and no directory is created, so an input
    error later leaves none."""
    start = path.absolute().parent if file else path.absolute()
    existing = next(p for p in (start, *start.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{flag} {path} lies under {existing}, which is not a directory: give a path in a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".robustness-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot create files in {existing} ({e.strerror or e}); give a "
                         f"writable path") from None


def add_nproc(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds ``--nproc K`` (run in K processes through torchrun) to ``parser``."""
    parser.add_argument("--nproc", type=int_type(1, MAX_PROCESSES), default=None, metavar="K",
                        help=f"run in K processes through torchrun (python -m torch.distributed.run --standalone); "
                             f"each {what}. OMP_NUM_THREADS defaults to cores/K. Under torchrun itself "
                             f"(torchrun --nproc_per_node=K -m robustness ...) leave it out")


def parse_device(text: str) -> torch.device:
    """``--device``: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Anything else (``meta``, ``tpu``, ``cpu:3``, ``cuda:-1``) is an :class:`InputError`.
    """
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(text, str) or not re.fullmatch(r"cpu|cuda(:[0-9]{1,6})?", text):
        raise InputError(f"--device: unknown device {text!r} (use auto, cpu, cuda or cuda:N)")
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {text}: CUDA is not available on this machine; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0; use --device cuda or cuda:N with a smaller N")
    return device


def parse_seed(value: str) -> int:
    """``--seed``: an integer in ``[0, 2**63)`` (argparse type)."""
    try:
        seed = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if not 0 <= seed < 2**63:
        raise argparse.ArgumentTypeError(f"a seed must lie in [0, 2**63), got {value}")
    return seed


def print_report_body(report: Any, args: argparse.Namespace) -> None:
    """The report's warnings not yet shown on the terminal, its table, and the published figures beside ours
    (an attack :class:`~robustness.report.Report` or a :class:`~robustness.corruption_report.CorruptionReport`)."""
    from robustness.claims import published_line

    for w in report.warnings:
        if w not in getattr(args, "shown_warnings", ()):  # already printed when it was raised
            print(f"warning: {w}")
    print(report.table())
    if (published := published_line(report.published)) is not None:
        print(published)
