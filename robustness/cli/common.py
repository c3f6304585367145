"""Argument helpers that ``robustness evaluate`` and ``robustness train`` share: budgets,
number lists (``--mean``/``--std``), ``--device``, ``--seed`` and ``--nproc``. Each raises
:class:`robustness.errors.InputError` (or argparse's ``ArgumentTypeError``) with what to type
instead: a value that overflows a float (``1e400``) is an input error, never an ``OverflowError``.

Example::

    parse_epsilons("0,2/255,8/255")  # [0.0, 0.00784..., 0.03137...]
    parse_floats("0.5,0.25", "--std")  # [0.5, 0.25]
"""

from __future__ import annotations

import argparse
import math
import re
from fractions import Fraction

import torch

from robustness.errors import InputError

__all__ = ["add_nproc", "parse_device", "parse_epsilons", "parse_floats", "parse_seed"]


def parse_epsilons(text: str) -> list[float]:
    """``"0,2/255,0.1"`` -> ``[0.0, 0.00784..., 0.1]``; raises :class:`InputError` on bad values."""
    if not text.strip(" ,"):
        raise InputError("--eps: give at least one budget, e.g. --eps 0,2/255,8/255")
    values = parse_floats(text, "--eps")
    negative = [v for v in values if v < 0]
    if negative:
        raise InputError(f"--eps: budgets must be >= 0, got {negative[0]:g}")
    return values


def parse_floats(text: str, flag: str) -> list[float]:
    """``"0.5, 1/4"`` -> ``[0.5, 0.25]`` for ``flag``; non-numbers and non-finite values are input errors."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(Fraction(part))
        except OverflowError:
            raise InputError(f"{flag}: {part!r} is too large for a float; give finite numbers") from None
        except (ValueError, ZeroDivisionError):
            raise InputError(f"{flag}: {part!r} is not a number; give numbers, e.g. 0.5,0.25") from None
        if not math.isfinite(value):  # unreachable through Fraction, kept for safety
            raise InputError(f"{flag}: {part!r} is not finite; give finite numbers")
        values.append(value)
    if not values:
        raise InputError(f"{flag}: give at least one number, e.g. {flag} 0.5")
    return values


def add_nproc(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds ``--nproc K`` (run in K processes through torchrun) to ``parser``."""
    parser.add_argument("--nproc", type=int, default=None, metavar="K",
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
