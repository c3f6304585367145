"""The evaluation runner: every attack over a sweep of budgets, verified, per sample.

``evaluate`` is the one entry point that Python code, the CLI and the pytest plugin call.
What it spends and what it trusts:

* Samples misclassified clean are never attacked.
* Budgets are swept in increasing order; a sample that an attack broke inside a smaller
  ball counts as broken inside every larger one, so each attack only works on the samples
  it has not broken yet, and starts from the best point it found for them at the previous
  budget (which lies inside the larger ball) instead of from scratch. A minimization attack (Carlini-Wagner) runs once and answers
  every budget by the size of the perturbation it found.
* Nothing an attack returns is trusted: the runner projects it onto the budget, clips it
  to the bounds, re-predicts, and counts only what it verified.
* ``robust_accuracy`` is the per-sample worst case over all attacks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from attacks.base import Attack, MinimizationAttack
from defenses.preprocessing import check_gradient_mode, describe_defenses
from defenses.preprocessing import gradient_mode as defense_gradient_mode
from robustness.data import DataLike, as_loader, iterate_batches
from robustness.errors import InputError, RobustnessWarning
from robustness.model import evaluation_mode, model_device
from robustness.norms import check_bounds, check_norm, clip_to_bounds, norm_of, project
from robustness.registry import ATTACKS
from robustness.report import Report

__all__ = ["evaluate", "resolve_attacks", "check_epsilons"]

log = logging.getLogger(__name__)

AttackLike = Union[str, Attack]
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


def resolve_attacks(attacks: Sequence[AttackLike] | AttackLike, norm: str) -> dict[str, Attack]:
    """Attack objects keyed by unique report names; registry names are built for ``norm``."""
    if isinstance(attacks, (str, Attack)):
        attacks = [attacks]
    if not attacks:
        raise InputError("no attacks given: pass attack objects or registry names such as 'pgd'")
    resolved: dict[str, Attack] = {}
    for item in attacks:
        if isinstance(item, str):
            attack = ATTACKS.create(item.strip().lower(), norm=norm)
            label = item.strip().lower()
        elif isinstance(item, Attack):
            attack = item
            label = type(item).name
        else:
            raise InputError(f"attacks must be Attack objects or registry names, got {type(item).__name__}")
        if attack.norm != norm:
            raise InputError(
                f"attack {label!r} works in the {attack.norm} norm but the sweep is {norm}: "
                f"build it with norm={norm!r} or drop it"
            )
        base, k = label, 2
        while label in resolved:
            label, k = f"{base}-{k}", k + 1
        resolved[label] = attack
    return resolved


def _seed_for(seed: int, *parts: int) -> int:
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _check_batch(x: Tensor, y: Tensor, bounds: tuple[float, float], index: int) -> None:
    if not x.is_floating_point():
        raise InputError(
            f"inputs of batch {index} have dtype {x.dtype}: convert them to float in pixel space "
            f"within bounds {list(bounds)} (e.g. divide uint8 images by 255)"
        )
    if x.dim() < 2:
        raise InputError(f"inputs must have shape (N, ...), got {tuple(x.shape)}")
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


def _check_logits(logits: Any, n: int, y: Tensor) -> int:
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


def _looks_like_probabilities(logits: Tensor) -> bool:
    if logits.numel() == 0 or bool((logits < 0).any()) or bool((logits > 1).any()):
        return False
    return bool(torch.allclose(logits.sum(dim=1), torch.ones(logits.shape[0], device=logits.device), atol=1e-3))


def _versions() -> dict[str, str]:
    import robustness

    return {
        "robustness": robustness.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    model: nn.Module,
    data: DataLike,
    *,
    attacks: Sequence[AttackLike] | AttackLike,
    epsilons: Sequence[float] | float,
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    gradient_mode: str | None = "adaptive",
) -> Report:
    """Robust accuracy of ``model`` on ``data`` against ``attacks`` at each budget in ``epsilons``.

    Args:
        model: an ``nn.Module`` mapping pixel-space inputs ``(N, ...)`` to logits ``(N, classes)``;
            wrap it in :class:`robustness.NormalizedModel` if it expects normalized inputs.
        data: an ``(x, y)`` pair of tensors, a ``Dataset`` or a ``DataLoader``.
        attacks: attack objects or registry names (``"fgsm"``, ``"pgd"``, ``"cw"``).
        epsilons: budgets in the ``norm``; 0 means clean accuracy.
        norm: ``"linf"`` or ``"l2"``.
        bounds: the valid input range; inputs outside it are an error.
        batch_size: examples per batch when ``data`` is not already a ``DataLoader``.
        device: where to run; ``None`` keeps the model's device. The model is moved back after.
        seed: seeds every random draw (per batch, attack and budget), recorded in the report.
        progress: show a tqdm bar over batches (only when stderr is a terminal).
        gradient_mode: how attacks differentiate through preprocessing defenses
            (:class:`defenses.Defended` anywhere in ``model``): ``"adaptive"`` (BPDA and EOT as each
            defense declares; the honest number), ``"naive"`` (plain autograd: what a defense-unaware
            attack sees), or ``None`` to leave each ``Defended`` in its own mode. Restored afterwards;
            the report records it and every defense (``Report.defenses``).

    Returns:
        A :class:`Report`. The model comes back with its parameters, buffers, train/eval mode
        and device unchanged.

    Example::

        report = robustness.evaluate(model, (x, y), attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.2])
        print(report.table())
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    norm = check_norm(norm)
    bounds = check_bounds(bounds)
    eps_all = check_epsilons(epsilons)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    mode = None if gradient_mode is None else check_gradient_mode(gradient_mode)
    for d in describe_defenses(model):
        for p in d["preprocessors"]:
            if tuple(p["bounds"]) != bounds:
                raise InputError(
                    f"defense {p['name']} at {d['path'] or 'the model'} declares bounds {p['bounds']} but the "
                    f"evaluation uses {list(bounds)}: build the preprocessors with bounds={tuple(bounds)}"
                )
    budgets = [e for e in eps_all if e > 0]
    attack_map = resolve_attacks(attacks, norm)
    loader = as_loader(data, batch_size)
    run_device = torch.device(device) if device is not None else model_device(model)
    if run_device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {run_device} was requested but CUDA is not available: use device='cpu'")

    n_total = 0
    num_classes = 0
    labels: list[Tensor] = []
    clean_preds: list[Tensor] = []
    broken_at: dict[str, list[Tensor]] = {name: [] for name in attack_map}
    max_used = {e: 0.0 for e in budgets}
    timings = {name: 0.0 for name in attack_map}
    timings["clean"] = 0.0
    notes: list[str] = []
    warned_probs = False
    start = time.perf_counter()
    never = len(budgets)  # broken_at value for "not broken at any budget"

    modes = contextlib.nullcontext() if mode is None else defense_gradient_mode(model, mode)
    with evaluation_mode(model, run_device), modes:
        defenses_used = describe_defenses(model)  # in the modes the attacks run under
        if any(d["gradient_mode"] == "naive" for d in defenses_used):
            msg = (
                "gradient_mode='naive': attacks took plain autograd gradients through the preprocessing "
                "defenses, so a defense that only hides gradients looks robust; evaluate with "
                "gradient_mode='adaptive' (BPDA and EOT) for a trustworthy number"
            )
            warnings.warn(msg, RobustnessWarning, stacklevel=2)
            notes.append(msg)
        if any(p["randomized"] for d in defenses_used for p in d["preprocessors"]):
            notes.append(
                "the model holds randomized defenses: every prediction (clean and verification) is one draw"
            )
        bar = tqdm(
            iterate_batches(loader), desc="evaluate", unit="batch",
            disable=not progress or not sys.stderr.isatty(),
        )
        for b, (x, y) in enumerate(bar):
            _check_batch(x, y, bounds, b)
            x = x.to(run_device, non_blocking=True).float()
            y = y.to(run_device, non_blocking=True).long()
            n = x.shape[0]
            if n == 0:
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                logits = model(x)
            num_classes = _check_logits(logits, n, y)
            if not warned_probs and _looks_like_probabilities(logits):
                warned_probs = True
                msg = (
                    "the model seems to output probabilities (rows are non-negative and sum to 1): gradients "
                    "through a softmax saturate and make attacks look weaker; return logits instead"
                )
                warnings.warn(msg, RobustnessWarning, stacklevel=2)
                notes.append(msg)
            pred = logits.argmax(dim=1)
            correct = pred == y
            _sync(run_device)
            timings["clean"] += time.perf_counter() - t0
            for a, (name, attack) in enumerate(attack_map.items()):
                t0 = time.perf_counter()
                broken = torch.full((n,), never, dtype=torch.long, device=run_device)
                if budgets:
                    if isinstance(attack, MinimizationAttack):
                        _run_minimization(model, attack, x, y, correct, budgets, bounds, norm,
                                          _seed_for(seed, b, a), broken, max_used)
                    else:
                        _run_fixed(model, attack, x, y, correct, budgets, bounds, norm, seed, b, a,
                                   broken, max_used)
                _sync(run_device)
                timings[name] += time.perf_counter() - t0
                broken_at[name].append(broken.cpu())
            labels.append(y.cpu())
            clean_preds.append(pred.cpu())
            n_total += n

    if n_total == 0:
        raise InputError("the data yielded no examples: nothing to evaluate")
    y_all = torch.cat(labels)
    pred_all = torch.cat(clean_preds)
    correct_all = pred_all == y_all
    broken_all = {name: torch.cat(v) for name, v in broken_at.items()}
    worst = torch.stack(list(broken_all.values())).amin(dim=0)
    clean_acc = correct_all.float().mean().item()

    def accuracy(broken: Tensor) -> dict[float, float]:
        out: dict[float, float] = {}
        for e in eps_all:
            if e == 0:
                out[e] = clean_acc
            else:
                i = budgets.index(e)
                out[e] = (correct_all & (broken > i)).float().mean().item()
        return out

    timings["total"] = time.perf_counter() - start
    return Report(
        clean_accuracy=clean_acc,
        robust_accuracy=accuracy(worst),
        by_attack={name: accuracy(v) for name, v in broken_all.items()},
        n_examples=n_total,
        epsilons=eps_all,
        norm=norm,
        bounds=bounds,
        attacks={name: a.describe() for name, a in attack_map.items()},
        seed=seed,
        batch_size=getattr(loader, "batch_size", None) or batch_size,
        device=str(run_device),
        versions=_versions(),
        timings=timings,
        max_perturbation=max_used,
        num_classes=num_classes,
        warnings=notes,
        gradient_mode=mode,
        defenses=defenses_used,
        per_sample={
            "label": y_all.tolist(),
            "clean_prediction": pred_all.tolist(),
            **{f"broken_at:{name}": v.tolist() for name, v in broken_all.items()},
            "broken_at:worst": worst.tolist(),
        },
    )


def _run_fixed(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    budgets: list[float],
    bounds: tuple[float, float],
    norm: str,
    seed: int,
    batch: int,
    attack_index: int,
    broken: Tensor,
    max_used: dict[float, float],
) -> None:
    """Sweep budgets upwards, attacking only samples this attack has not broken yet."""
    alive = correct.nonzero().squeeze(1)
    previous: Tensor | None = None  # the best point of each survivor at the previous budget
    for i, eps in enumerate(budgets):
        if alive.numel() == 0:
            return
        gen = torch.Generator(device=x.device).manual_seed(_seed_for(seed, batch, attack_index, i))
        x0, y0 = x[alive], y[alive]
        x_adv = attack(model, x0, y0, eps=eps, bounds=bounds, generator=gen, init=previous)
        if not isinstance(x_adv, Tensor) or x_adv.shape != x0.shape:
            raise InputError(f"attack {attack.describe()} returned {getattr(x_adv, 'shape', type(x_adv))}, "
                             f"expected a tensor of shape {tuple(x0.shape)}")
        x_adv = clip_to_bounds(project(x_adv.detach().to(x0.dtype), x0, eps, norm), bounds)  # never trusted
        with torch.no_grad():
            fooled = model(x_adv).argmax(dim=1) != y0
        max_used[eps] = max(max_used[eps], float(norm_of(x_adv - x0, norm).max()))
        broken[alive[fooled]] = i
        alive, previous = alive[~fooled], x_adv[~fooled]  # warm start: the next ball contains this point


def _run_minimization(
    model: nn.Module,
    attack: MinimizationAttack,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    budgets: list[float],
    bounds: tuple[float, float],
    norm: str,
    seed: int,
    broken: Tensor,
    max_used: dict[float, float],
) -> None:
    """Run once; each budget counts the verified adversarial inputs whose perturbation fits in it."""
    alive = correct.nonzero().squeeze(1)
    if alive.numel() == 0:
        return
    gen = torch.Generator(device=x.device).manual_seed(seed)
    x0, y0 = x[alive], y[alive]
    x_adv = attack(model, x0, y0, bounds=bounds, generator=gen)
    if not isinstance(x_adv, Tensor) or x_adv.shape != x0.shape:
        raise InputError(f"attack {attack.describe()} returned {getattr(x_adv, 'shape', type(x_adv))}, "
                         f"expected a tensor of shape {tuple(x0.shape)}")
    x_adv = clip_to_bounds(x_adv.detach().to(x0.dtype), bounds)
    with torch.no_grad():
        fooled = model(x_adv).argmax(dim=1) != y0
    size = norm_of(x_adv - x0, norm)
    eps_t = torch.tensor(budgets, device=x.device, dtype=size.dtype)
    fits = fooled[:, None] & (size[:, None] <= eps_t[None, :])  # (n, budgets), monotone in the budget
    first = torch.where(fits.any(dim=1), fits.float().argmax(dim=1), torch.full_like(alive, len(budgets)))
    broken[alive] = first
    for i, eps in enumerate(budgets):
        used = size[fits[:, i]]
        if used.numel():
            max_used[eps] = max(max_used[eps], float(used.max()))
