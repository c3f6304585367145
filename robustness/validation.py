"""Validation of what users pass to :func:`robustness.evaluate`: budgets, batches and model outputs.

Each check raises :class:`robustness.InputError` with a message that says what is wrong and
what to do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustness.errors import InputError

__all__ = [
    "CURVE", "check_batch", "check_batch_size", "check_budget_list", "check_epsilons", "check_flag", "check_logits",
    "check_not_boolean", "looks_like_probabilities",
]

#: the word that asks for the robustness curve among the budgets (``epsilons="curve"``, ``--eps curve,0,0.1``)
CURVE = "curve"

_BOUNDS_TOL = 1e-6


def check_epsilons(epsilons: Sequence[float] | float) -> list[float]:
    """Sorted, de-duplicated budgets; raises :class:`InputError` on anything but finite numbers >= 0."""
    if isinstance(epsilons, (int, float)) and not isinstance(epsilons, bool):
        epsilons = [epsilons]
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, Sequence) or len(epsilons) == 0:
        raise InputError(f"epsilons must be a non-empty list of numbers >= 0, got {epsilons!r}")
    values = []
    for e in epsilons:
        if isinstance(e, bool) or not isinstance(e, (int, float, np.floating, np.integer)):
            raise InputError(f"every budget must be a number, got {e!r}")
        if not math.isfinite(float(e)) or float(e) < 0:
            raise InputError(f"every budget must be a finite number >= 0, got {e!r}")
        values.append(float(e))
    return sorted(set(values))


def check_budget_list(epsilons: Sequence[float | str] | float | str) -> tuple[bool, list[float]]:
    """``(curve, budgets)``: whether :data:`CURVE` (any case) is among ``epsilons``, and the numeric
    budgets sorted and de-duplicated (:func:`check_epsilons`). ``"curve"`` alone lists the budget 0
    (clean accuracy), so that the report always has a per-budget table."""
    if isinstance(epsilons, str):
        epsilons = [epsilons]
    if isinstance(epsilons, (int, float)) or isinstance(epsilons, bytes) or not isinstance(epsilons, Sequence):
        return False, check_epsilons(epsilons)  # type: ignore[arg-type]
    words = [e for e in epsilons if isinstance(e, str)]
    unknown = [w for w in words if w.strip().lower() != CURVE]
    if unknown:
        raise InputError(f"every budget must be a number or {CURVE!r} (the robustness curve of the minimization "
                         f"attacks), got {unknown[0]!r}")
    numbers = [e for e in epsilons if not isinstance(e, str)]
    if words and not numbers:
        return True, [0.0]
    return bool(words), check_epsilons(numbers)


def check_not_boolean(labels: Tensor, what: str) -> None:
    """Boolean labels are refused, not read as 0/1: ``what`` (``"y in data.npz"``) names them."""
    if labels.dtype == torch.bool:
        raise InputError(f"{what} are booleans, not class labels: store integer class indices (y.long(), or "
                         "y.astype(int) in NumPy: False -> 0, True -> 1) if that is what they mean")


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` as an ``int`` in ``[1, 2**63)``; booleans and anything else are an error."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size < 2**63:
        raise InputError(f"batch_size must be an integer >= 1 and below 2**63, got {batch_size!r}")
    return batch_size


def check_flag(name: str, value: object) -> bool:
    """``value`` when it is ``True`` or ``False``; anything else is an error naming the setting ``name``."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return value


def check_batch(x: Tensor, y: Tensor, bounds: tuple[float, float], index: int) -> None:
    """Inputs are finite floats inside ``bounds``; labels are integers (not booleans), one per input."""
    if not x.is_floating_point():
        raise InputError(
            f"inputs of batch {index} have dtype {x.dtype}: convert them to float in pixel space "
            f"within bounds {list(bounds)} (e.g. divide uint8 images by 255)"
        )
    if x.dim() < 2:
        raise InputError(f"inputs must have shape (N, ...), got {tuple(x.shape)}")
    check_not_boolean(y, f"labels of batch {index}")
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        raise InputError(f"labels must be integers of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    if x.numel() == 0:
        return
    finite = torch.isfinite(x).all()
    lo, hi = torch.aminmax(x.detach())
    if not bool(finite):
        raise InputError(f"inputs of batch {index} contain NaN or inf values: clean the data before evaluating")
    if lo.item() < bounds[0] - _BOUNDS_TOL or hi.item() > bounds[1] + _BOUNDS_TOL:
        raise InputError(
            f"inputs of batch {index} lie in [{lo.item():.6g}, {hi.item():.6g}], outside the declared bounds "
            f"{list(bounds)}: pass bounds=(low, high) that match the data, or put normalization inside the "
            f"model (robustness.NormalizedModel) and feed pixel-space inputs"
        )


def check_logits(logits: Any, n: int, y: Tensor) -> int:
    """The model returned finite ``(n, classes)`` logits that the labels index; returns ``classes``."""
    if not isinstance(logits, Tensor):
        raise InputError(f"the model must return a tensor of logits, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != n:
        raise InputError(
            f"the model must return logits of shape (N, classes) = ({n}, C), got {tuple(logits.shape)}: "
            f"flatten or select the classifier output"
        )
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise InputError(f"the model returns {num_classes} class score(s): a classifier needs at least 2")
    if not bool(torch.isfinite(logits).all()):
        raise InputError("the model returned NaN or inf logits on clean inputs: check the model and the data")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise InputError(
            f"labels range over [{int(y.min())}, {int(y.max())}] but the model has {num_classes} classes "
            f"(labels must be in [0, {num_classes - 1}])"
        )
    return num_classes


def looks_like_probabilities(logits: Tensor) -> bool:
    """Rows are non-negative and sum to 1: the model ends in a softmax."""
    if logits.numel() == 0 or bool((logits < 0).any()) or bool((logits > 1).any()):
        return False
    ones = torch.ones(logits.shape[0], device=logits.device, dtype=logits.dtype)
    return bool(torch.allclose(logits.sum(dim=1), ones, atol=1e-3))
