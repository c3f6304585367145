"""The evaluation runner: every attack over a sweep of budgets, verified, per sample.

``evaluate`` is the one entry point that Python code, the CLI and the pytest plugin call.
What it spends and what it trusts:

* Samples misclassified clean are never attacked.
* Budgets are swept in increasing order; a sample that an attack broke inside a smaller
  ball counts as broken inside every larger one, so each attack only works on the samples it
  has not broken yet, and starts from the best point it found for them at the previous budget
  (which lies inside the larger ball) instead of from scratch. A minimization attack
  (Carlini-Wagner) runs once and answers every budget by the size of the perturbation it
  found (:mod:`robustness.sweep`).
* Nothing an attack returns is trusted: the runner projects it onto the budget, clips it
  to the bounds, re-predicts, and counts only what it verified.
* ``robust_accuracy`` is the per-sample worst case over all attacks; the report adds each
  attack alone, the cumulative accuracy after each attack in order, per-class figures, the
  sizes of the successful perturbations, the model calls and time of each attack, and the
  verdicts of the sanity checks (:mod:`robustness.checks`).
"""

from __future__ import annotations

import contextlib
import logging
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

from attacks.base import Attack
from attacks.presets import preset_entries
from defenses.preprocessing import check_gradient_mode, describe_defenses
from defenses.preprocessing import gradient_mode as defense_gradient_mode
from robustness import summary
from robustness.data import DataLike, as_loader, iterate_batches
from robustness.errors import InputError, RobustnessWarning
from robustness.model import CallCounter, evaluation_mode, model_device
from robustness.norms import check_bounds, check_norm
from robustness.registry import ATTACKS
from robustness.report import Check, Report
from robustness.sweep import derive_seed, sweep
from robustness.validation import check_batch, check_epsilons, check_logits, check_seed, looks_like_probabilities

__all__ = ["evaluate", "resolve_attacks", "check_epsilons"]

log = logging.getLogger(__name__)

AttackLike = Union[str, Attack]
#: examples of the evaluation that the sanity checks run on
CHECK_SUBSET = 64
#: broken examples kept for the report's image grid
EXAMPLES = 8


def resolve_attacks(attacks: Sequence[AttackLike] | AttackLike, norm: str) -> dict[str, Attack]:
    """Attack objects keyed by unique report names; registry names are built for ``norm``.

    A string that names a preset (:data:`attacks.presets.PRESETS`: ``"standard"``, ``"smoke"``)
    expands, in place, to the preset's attacks.
    """
    if isinstance(attacks, (str, Attack)):
        attacks = [attacks]
    if not attacks:
        raise InputError("no attacks given: pass attack objects, registry names such as 'pgd' or a preset")
    items: list[tuple[AttackLike, dict[str, Any]]] = []
    for item in attacks:
        entries = preset_entries(item) if isinstance(item, str) else None
        if entries is not None and item.strip().lower() in ATTACKS:
            raise InputError(f"{item!r} is both a preset and a registered attack name: rename the attack")
        items += [(n, dict(kw)) for n, kw in entries] if entries is not None else [(item, {})]
    resolved: dict[str, Attack] = {}
    for item, settings in items:
        if isinstance(item, str) and item.strip().lower().startswith("art:"):
            from attacks.art_adapter import from_spec  # ART is imported only when asked for

            attack = from_spec(item.strip()[4:], norm=norm)
            label = attack.label
        elif isinstance(item, str):
            attack = ATTACKS.create(item.strip().lower(), norm=norm, **settings)
            label = item.strip().lower()
        elif isinstance(item, Attack):
            attack = item
            label = item.label
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
    checks: bool = True,
    strict: bool = False,
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
        checks: run the sanity checks of :mod:`robustness.checks` on a small subset and record
            their verdicts in ``Report.checks``.
        strict: a check that would warn fails instead (``status="failed"``); the CLI's
            ``--strict`` and the pytest plugin turn that into a failure.

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
    seed = check_seed(seed)
    mode = None if gradient_mode is None else check_gradient_mode(gradient_mode)
    _check_defense_bounds(model, bounds)
    budgets = [e for e in eps_all if e > 0]
    attack_map = resolve_attacks(attacks, norm)
    loader = as_loader(data, batch_size)
    run_device = torch.device(device) if device is not None else model_device(model)
    if run_device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {run_device} was requested but CUDA is not available: use device='cpu'")

    results = _Results(list(attack_map), budgets)
    notes: list[str] = []
    start = time.perf_counter()
    modes = contextlib.nullcontext() if mode is None else defense_gradient_mode(model, mode)
    with evaluation_mode(model, run_device), modes:
        defenses_used = describe_defenses(model)  # in the modes the attacks run under
        notes += _defense_notes(defenses_used)
        counted = CallCounter(model)
        bar = tqdm(iterate_batches(loader), desc="evaluate", unit="batch",
                   disable=not progress or not sys.stderr.isatty())
        for b, (x, y) in enumerate(bar):
            check_batch(x, y, bounds, b)
            x = x.to(run_device, non_blocking=True).float()
            y = y.to(run_device, non_blocking=True).long()
            if x.shape[0] == 0:
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                logits = model(x)
            results.num_classes = check_logits(logits, x.shape[0], y)
            if not results.warned_probabilities and looks_like_probabilities(logits):
                results.warned_probabilities = True
                msg = ("the model seems to output probabilities (rows are non-negative and sum to 1): gradients "
                       "through a softmax saturate and make attacks look weaker; return logits instead")
                warnings.warn(msg, RobustnessWarning, stacklevel=2)
                notes.append(msg)
            pred = logits.argmax(dim=1)
            correct = pred == y
            _sync(run_device)
            results.timings["clean"] += time.perf_counter() - t0
            batch_results = {}
            for a, (name, attack) in enumerate(attack_map.items()):
                t0 = time.perf_counter()
                before = counted.snapshot()
                batch_results[name] = sweep(counted, attack, x, y, correct, budgets, bounds=bounds, norm=norm,
                                            seed=derive_seed(seed, b, a))
                _sync(run_device)
                results.timings[name] += time.perf_counter() - t0
                results.count_calls(name, before, counted.snapshot())
            results.add_batch(x, y, pred, batch_results)

        if results.n == 0:
            raise InputError("the data yielded no examples: nothing to evaluate")
        report = results.report(
            eps_all, norm=norm, bounds=bounds, attacks={n: a.describe() for n, a in attack_map.items()}, seed=seed,
            batch_size=getattr(loader, "batch_size", None) or batch_size, device=str(run_device), notes=notes,
            gradient_mode=mode, defenses=defenses_used,
        )
        if checks and budgets:
            t0 = time.perf_counter()
            report.checks = _run_checks(model, results, attack_map, report, norm, bounds, seed, strict)
            results.timings["checks"] = time.perf_counter() - t0
    results.timings["total"] = time.perf_counter() - start
    report.timings = dict(results.timings)
    return report


def _check_defense_bounds(model: nn.Module, bounds: tuple[float, float]) -> None:
    for d in describe_defenses(model):
        for p in d["preprocessors"]:
            if tuple(p["bounds"]) != bounds:
                raise InputError(
                    f"defense {p['name']} at {d['path'] or 'the model'} declares bounds {p['bounds']} but the "
                    f"evaluation uses {list(bounds)}: build the preprocessors with bounds={tuple(bounds)}"
                )


def _defense_notes(defenses_used: list[dict[str, Any]]) -> list[str]:
    notes = []
    if any(d["gradient_mode"] == "naive" for d in defenses_used):
        msg = (
            "gradient_mode='naive': attacks took plain autograd gradients through the preprocessing "
            "defenses, so a defense that only hides gradients looks robust; evaluate with "
            "gradient_mode='adaptive' (BPDA and EOT) for a trustworthy number"
        )
        warnings.warn(msg, RobustnessWarning, stacklevel=3)
        notes.append(msg)
    if any(p["randomized"] for d in defenses_used for p in d["preprocessors"]):
        notes.append("the model holds randomized defenses: every prediction (clean and verification) is one draw")
    return notes


def _run_checks(model: nn.Module, results: _Results, attack_map: dict[str, Attack], report: Report, norm: str,
                bounds: tuple[float, float], seed: int, strict: bool) -> list[Check]:
    from robustness.checks import run_checks

    x, y, correct, broken = results.check_subset()
    return run_checks(
        model, x, y, attacks=attack_map, broken_at=broken, correct=correct, budgets=results.budgets,
        robust_accuracy=report.robust_accuracy, by_attack=report.by_attack, norm=norm, bounds=bounds,
        num_classes=report.num_classes, seed=derive_seed(seed, 1 << 20), strict=strict,
    )


class _Results:
    """What the sweep found, gathered batch by batch (per-sample results live on the CPU)."""

    def __init__(self, names: list[str], budgets: list[float]) -> None:
        self.names = names
        self.budgets = budgets
        self.never = len(budgets)
        self.n = 0
        self.num_classes = 0
        self.warned_probabilities = False
        self.labels: list[Tensor] = []
        self.clean: list[Tensor] = []
        self.broken: dict[str, list[Tensor]] = {k: [] for k in names}
        self.size: dict[str, list[Tensor]] = {k: [] for k in names}
        self.adv_pred: dict[str, list[Tensor]] = {k: [] for k in names}
        self.max_used = [0.0] * len(budgets)
        self.timings = {"clean": 0.0, **{k: 0.0 for k in names}}
        self.calls = {k: {"calls": 0, "samples": 0, "gradient_samples": 0} for k in names}
        self.examples: list[dict[str, Any]] = []
        self.subset: dict[str, Any] = {"x": [], "y": [], "correct": [], "broken": {k: [] for k in names}, "n": 0}

    def count_calls(self, name: str, before: tuple[int, int, int], after: tuple[int, int, int]) -> None:
        for key, b, a in zip(("calls", "samples", "gradient_samples"), before, after):
            self.calls[name][key] += a - b

    def add_batch(self, x: Tensor, y: Tensor, pred: Tensor, found: dict[str, Any]) -> None:
        offset = self.n
        self.n += x.shape[0]
        self.labels.append(y.cpu())
        self.clean.append(pred.cpu())
        for name, res in found.items():
            self.broken[name].append(res.broken.cpu())
            self.size[name].append(res.size.cpu())
            self.adv_pred[name].append(res.prediction.cpu())
            self.max_used = [max(m, u) for m, u in zip(self.max_used, res.max_used)]
        self._keep_subset(x, y, pred == y, found)
        self._keep_examples(x, y, found, offset)

    def _keep_subset(self, x: Tensor, y: Tensor, correct: Tensor, found: dict[str, Any]) -> None:
        take = min(CHECK_SUBSET - self.subset["n"], x.shape[0])
        if take <= 0:
            return
        self.subset["n"] += take
        self.subset["x"].append(x[:take])
        self.subset["y"].append(y[:take])
        self.subset["correct"].append(correct[:take])
        for name, res in found.items():
            self.subset["broken"][name].append(res.broken[:take])

    def check_subset(self) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        s = self.subset
        return (torch.cat(s["x"]), torch.cat(s["y"]), torch.cat(s["correct"]),
                {k: torch.cat(v) for k, v in s["broken"].items()})

    def _keep_examples(self, x: Tensor, y: Tensor, found: dict[str, Any], offset: int) -> None:
        """The first :data:`EXAMPLES` broken samples, with the adversarial input at the smallest budget."""
        if len(self.examples) >= EXAMPLES or not found:
            return
        stacked = torch.stack([found[k].broken for k in self.names])  # (attacks, n)
        worst, which = stacked.min(dim=0)  # min returns the first attack in order on ties
        for i in (worst < self.never).nonzero().squeeze(1).tolist()[: EXAMPLES - len(self.examples)]:
            res = found[self.names[int(which[i])]]
            self.examples.append({
                "index": offset + i, "label": int(y[i]), "attack": self.names[int(which[i])],
                "eps": self.budgets[int(worst[i])], "adversarial_prediction": int(res.prediction[i]),
                "clean": x[i].detach().cpu(), "adversarial": res.adversarial[i].detach().cpu(),
            })

    def report(self, epsilons: list[float], **config: Any) -> Report:
        labels, clean = torch.cat(self.labels), torch.cat(self.clean)
        correct = clean == labels
        broken = {k: torch.cat(v) for k, v in self.broken.items()}
        size = {k: torch.cat(v) for k, v in self.size.items()}
        adv_pred = {k: torch.cat(v) for k, v in self.adv_pred.items()}
        stacked = torch.stack(list(broken.values()))
        worst, which = stacked.min(dim=0)
        pick = which.unsqueeze(0)
        worst_size = torch.stack(list(size.values())).gather(0, pick).squeeze(0)
        worst_pred = torch.stack(list(adv_pred.values())).gather(0, pick).squeeze(0)
        is_broken = worst < self.never
        per_sample: dict[str, list[Any]] = {
            "label": labels.tolist(),
            "clean_prediction": clean.tolist(),
            **{f"broken_at:{k}": v.tolist() for k, v in broken.items()},
            "broken_at:worst": worst.tolist(),
            "broken_by": [self.names[int(w)] if ok else "" for w, ok in zip(which, is_broken)],
            "adversarial_prediction": torch.where(is_broken, worst_pred, torch.full_like(worst_pred, -1)).tolist(),
            "perturbation": [v if ok else None for v, ok in zip(worst_size.tolist(), is_broken.tolist())],
        }
        return Report(
            clean_accuracy=int(correct.sum()) / self.n,
            robust_accuracy=summary.accuracy_curve(correct, worst, epsilons, self.budgets),
            by_attack={k: summary.accuracy_curve(correct, v, epsilons, self.budgets) for k, v in broken.items()},
            n_examples=self.n,
            epsilons=epsilons,
            norm=config["norm"],
            bounds=config["bounds"],
            attacks=config["attacks"],
            seed=config["seed"],
            batch_size=config["batch_size"],
            device=config["device"],
            versions=_versions(),
            timings=dict(self.timings),
            max_perturbation=dict(zip(self.budgets, self.max_used)),
            num_classes=self.num_classes,
            warnings=config["notes"],
            gradient_mode=config["gradient_mode"],
            defenses=config["defenses"],
            cumulative=summary.cumulative(broken, correct, epsilons, self.budgets),
            per_class=summary.per_class(labels, correct, worst, epsilons, self.budgets, self.num_classes),
            perturbation=summary.perturbation_stats(broken, size, self.budgets),
            model_calls={k: dict(v) for k, v in self.calls.items()},
            examples=list(self.examples),
            per_sample=per_sample,
        )
