"""Argument helpers that ``robustness evaluate`` and ``robustness train`` share: budgets,
``--device`` and ``--nproc``. Each raises :class:`robustness.errors.InputError` with what to type
instead.

Example::

    parse_epsilons("0,2/255,8/255")  # [0.0, 0.00784..., 0.03137...]
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import torch

from robustness.errors import InputError

__all__ = ["add_nproc", "parse_device", "parse_epsilons", "parse_seed"]


def parse_epsilons(text: str) -> list[float]:
    """``"0,2/255,0.1"`` -> ``[0.0, 0.00784..., 0.1]``; raises :class:`InputError` on bad values."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(Fraction(part))
        except (ValueError, ZeroDivisionError, OverflowError):
            raise InputError(f"--eps: {part!r} is not a number (or not finite; use e.g. 0.1 or 8/255, comma "
                             "separated)") from None
        if value < 0:
            raise InputError(f"--eps: budgets must be >= 0, got {part}")
        values.append(value)
    if not values:
        raise InputError("--eps: give at least one budget, e.g. --eps 0,2/255,8/255")
    return values


def add_nproc(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds ``--nproc K`` (run in K processes through torchrun) to ``parser``."""
    parser.add_argument("--nproc", type=int, default=None, metavar="K",
                        help=f"run in K processes through torchrun (python -m torch.distributed.run --standalone); "
                             f"each {what}. OMP_NUM_THREADS defaults to cores/K. Under torchrun itself "
                             f"(torchrun --nproc_per_node=K -m robustness ...) leave it out")


def parse_device(text: str) -> torch.device:
    """``--device``: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"--device: unknown device {text!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {text}: CUDA is not available on this machine; use --device cpu")
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
