"""What a resumed training run must keep the same as the run that wrote its checkpoint.

A resume loads the checkpoint's optimizer and scheduler states, and torch's ``load_state_dict``
silently replaces the new objects' settings with the saved ones: a resume with another learning
rate, weight decay, ``T_max`` or milestones would quietly train with the old ones (or, for a
schedule built for another length, run off its end). :func:`optimizer_differences` and
:func:`scheduler_differences` list every setting that differs, so that the trainer can refuse
the resume and say what to change.

Settings are the plain values of the state dicts; what training changes as it runs (the step
counters, the current learning rate, a cycled momentum) is left out.

Example::

    diffs = optimizer_differences(state["optimizer"], optimizer.state_dict(), scheduled=True)
    # ["param group 0: weight_decay=0.0005 there, 0.0 here"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = ["optimizer_differences", "scheduler_differences"]

#: scheduler state entries that change as training runs (or do not affect the schedule)
RUNNING_SCHEDULER_KEYS = frozenset({"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step",
                                    "_is_initial", "verbose", "_initial_step", "best", "num_bad_epochs",
                                    "cooldown_counter", "_cycle_count", "T_cur"})
#: optimizer param-group entries that only choose an implementation
IMPLEMENTATION_KEYS = frozenset({"foreach", "fused", "differentiable", "capturable"})


def _differences(saved: Any, current: Any, where: str, skip: frozenset[str], out: list[str]) -> None:
    if isinstance(saved, Tensor) or isinstance(current, Tensor):
        return  # running state (momentum buffers, ...), not a setting
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        for key in sorted(set(saved) | set(current), key=str):
            if key in skip:
                continue
            name = f"{where}.{key}" if where else str(key)
            if key not in saved or key not in current:
                out.append(f"{name} only {'there' if key in saved else 'here'}")
            else:
                _differences(saved[key], current[key], name, skip, out)
        return
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)) and len(saved) == len(current):
        for i, (a, b) in enumerate(zip(saved, current)):
            _differences(a, b, f"{where}[{i}]", skip, out)
        return
    if isinstance(saved, float) or isinstance(current, float):
        if isinstance(saved, (int, float)) and isinstance(current, (int, float)) and (
                math.isclose(saved, current, rel_tol=1e-9, abs_tol=1e-15) or (saved != saved and current != current)):
            return
    elif saved == current:
        return
    out.append(f"{where}={saved!r} there, {current!r} here")


def optimizer_differences(saved: Mapping[str, Any], current: Mapping[str, Any], *, scheduled: bool) -> list[str]:
    """The settings of the optimizer state dicts ``saved`` (checkpoint) and ``current`` that differ.

    With a scheduler (``scheduled``), the learning rate is compared as the schedule's starting
    ``initial_lr`` (the current ``lr`` is the schedule's), and a momentum that the scheduler
    cycles (``base_momentum`` present) is left out.
    """
    groups_saved, groups_now = saved.get("param_groups", []), current.get("param_groups", [])
    if len(groups_saved) != len(groups_now):
        return [f"{len(groups_saved)} parameter group(s) there, {len(groups_now)} here"]
    out: list[str] = []
    for i, (a, b) in enumerate(zip(groups_saved, groups_now)):
        skip = set(IMPLEMENTATION_KEYS) | {"params"}
        if scheduled:
            skip.add("lr")
            if "base_momentum" in a or "base_momentum" in b:
                skip |= {"momentum", "betas"}
        else:
            skip.add("initial_lr")
        if len(a.get("params", [])) != len(b.get("params", [])):
            out.append(f"param group {i}: {len(a.get('params', []))} parameters there, "
                       f"{len(b.get('params', []))} here")
        _differences(a, b, f"param group {i}", frozenset(skip), out)
    return out


def scheduler_differences(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    """The settings of the scheduler state dicts ``saved`` (checkpoint) and ``current`` that differ
    (``None``: no scheduler)."""
    if saved is None or current is None:
        return [] if saved is None and current is None else ["a scheduler only " + ("there" if saved else "here")]
    out: list[str] = []
    _differences(saved, current, "", RUNNING_SCHEDULER_KEYS, out)
    return out
