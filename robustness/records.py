"""What one batch of an evaluation found, and how batch records become a report.

A :class:`BatchRecord` holds everything the report needs from one batch (or a part of one) (per-sample outcomes
on the CPU, the largest perturbation used, seconds and model calls per attack, a few example
images, and the examples the sanity checks run on). Records are self-contained and plain
(tensors, numbers, strings), so that they can be merged in any order by batch index: written
to a resumable state file (:mod:`robustness.state`) or gathered from the ranks of a
distributed run (:mod:`robustness.distributed`). :func:`assemble` turns the records, in batch
order, into the per-sample arrays and the :class:`~robustness.report.Report`.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustness import summary
from robustness.config import EvalConfig
from robustness.curve import Curve
from robustness.report import Report

__all__ = ["BatchRecord", "Assembled", "assemble", "digest", "CHECK_SUBSET", "EXAMPLES"]

#: examples of the evaluation (the first ones, in data order) that the sanity checks run on
CHECK_SUBSET = 64
#: broken examples kept for the report's image grid
EXAMPLES = 8


@dataclass
class BatchRecord:
    """Outcome of every attack on one range of examples: ``offset`` (the first example's position in
    the data, the record's key) and ``n`` examples, from the loader batch ``index``.

    Per attack ``name``: ``broken[name]`` (long, index of the smallest budget that broke each
    sample, ``len(budgets)`` for never), ``size[name]`` (norm of the verified perturbation,
    NaN where not broken), ``adv_pred[name]`` (prediction on it, -1 where not broken),
    ``max_used[name]`` (largest norm returned per budget), ``distance[name]`` (float64: the smallest
    verified adversarial distance found, ``inf`` for none; records written before it existed have
    none), ``seconds[name]`` and ``calls[name]``. ``seconds["clean"]`` is the clean pass. ``examples``: up to
    :data:`EXAMPLES` broken samples with their images. ``subset``: this batch's share of the
    first :data:`CHECK_SUBSET` examples of the evaluation (inputs, labels, clean correctness,
    ``broken``), ``None`` when it holds none.
    """

    index: int
    offset: int
    labels: Tensor
    clean: Tensor
    broken: dict[str, Tensor]
    size: dict[str, Tensor]
    adv_pred: dict[str, Tensor]
    max_used: dict[str, list[float]]
    seconds: dict[str, float]
    calls: dict[str, dict[str, int]]
    num_classes: int
    inputs: str = ""  # digest() of the range's inputs: a resumed evaluation checks the data did not change
    probabilities: bool = False
    examples: list[dict[str, Any]] = field(default_factory=list)
    subset: dict[str, Any] | None = None
    distance: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def to_state(self) -> dict[str, Any]:
        """Plain dict (tensors, numbers, strings) that ``torch.load(weights_only=True)`` reads back.

        Tensors are cloned: a view would carry (and serialize) its whole underlying storage.
        """
        return {f.name: _compact(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BatchRecord:
        return cls(**state)


def _compact(value: Any) -> Any:
    """``value`` with every tensor cloned (dicts and lists walked): no view outlives its batch."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def digest(x: Tensor) -> str:
    """SHA-256 of a tensor's values (CPU bytes): identifies the inputs of a range."""
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@dataclass
class Assembled:
    """The records of a whole evaluation, concatenated in batch order (CPU tensors)."""

    labels: Tensor
    clean: Tensor
    broken: dict[str, Tensor]
    size: dict[str, Tensor]
    adv_pred: dict[str, Tensor]
    subset: dict[str, Any] | None
    distance: dict[str, Tensor] = field(default_factory=dict)  #: per attack; filled for curve runs

    @property
    def correct(self) -> Tensor:
        return self.clean == self.labels


def _cat(records: list[BatchRecord], attr: str, names: list[str]) -> dict[str, Tensor]:
    return {k: torch.cat([getattr(r, attr)[k] for r in records]) for k in names}


def _subset(records: list[BatchRecord], names: list[str]) -> dict[str, Any] | None:
    parts = [r.subset for r in records if r.subset is not None]
    if not parts:
        return None
    return {
        "x": torch.cat([p["x"] for p in parts]),
        "y": torch.cat([p["y"] for p in parts]),
        "correct": torch.cat([p["correct"] for p in parts]),
        "broken": {k: torch.cat([p["broken"][k] for p in parts]) for k in names},
    }


def package_versions() -> dict[str, str]:
    """The versions a report records: robustness, torch, numpy, python."""
    import robustness

    return {
        "robustness": robustness.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def assemble(
    records: list[BatchRecord], config: EvalConfig, *, batch_size: int, device: str, notes: list[str],
    defenses: list[dict[str, Any]],
) -> tuple[Report, Assembled]:
    """The report of an evaluation from its batch records (any order; sorted by offset here).

    The report's settings come from ``config``; ``batch_size`` and ``device`` are those the run
    used, ``notes`` its warnings and ``defenses`` the model's preprocessing defenses.
    """
    names, epsilons, budgets = list(config.named_attacks), config.listed, config.budgets
    records = sorted(records, key=lambda r: r.offset)
    ends = [r.offset + r.n for r in records]
    if [r.offset for r in records] != [0] + ends[:-1]:
        raise RuntimeError("the batch records do not tile the data: a range is missing or counted twice")
    never = len(budgets)
    labels = torch.cat([r.labels for r in records])
    clean = torch.cat([r.clean for r in records])
    data = Assembled(labels=labels, clean=clean, broken=_cat(records, "broken", names),
                     size=_cat(records, "size", names), adv_pred=_cat(records, "adv_pred", names),
                     subset=_subset(records, names),
                     distance=_cat(records, "distance", names) if config.curve else {})
    n = int(labels.shape[0])
    correct = data.correct
    stacked = torch.stack([data.broken[k] for k in names])
    worst, which = stacked.min(dim=0)  # ties: the first attack in order
    pick = which.unsqueeze(0)
    worst_size = torch.stack([data.size[k] for k in names]).gather(0, pick).squeeze(0)
    worst_pred = torch.stack([data.adv_pred[k] for k in names]).gather(0, pick).squeeze(0)
    is_broken = worst < never
    per_sample: dict[str, list[Any]] = {
        "label": labels.tolist(),
        "clean_prediction": clean.tolist(),
        **{f"broken_at:{k}": v.tolist() for k, v in data.broken.items()},
        "broken_at:worst": worst.tolist(),
        "broken_by": [names[int(w)] if ok else "" for w, ok in zip(which, is_broken)],
        "adversarial_prediction": torch.where(is_broken, worst_pred, torch.full_like(worst_pred, -1)).tolist(),
        "perturbation": [v if ok else None for v, ok in zip(worst_size.tolist(), is_broken.tolist())],
    }
    curve = None
    if config.curve:
        per_sample.update(_distances(data.distance, correct, names))
        attacks = config.named_attacks
        minimizing = [k for k in names if getattr(attacks[k], "minimizes", False)]
        fixed = [k for k in names if k not in minimizing]
        fixed_worst = {}
        if fixed and budgets:
            fixed_broken = torch.stack([data.broken[k] for k in fixed]).min(dim=0).values
            fixed_worst = summary.accuracy_curve(correct, fixed_broken, budgets, budgets)
        curve = Curve.measure(correct, data.distance, minimizing, fixed_worst)
    seconds = {"clean": sum(r.seconds.get("clean", 0.0) for r in records)}
    seconds.update({k: sum(r.seconds.get(k, 0.0) for r in records) for k in names})
    calls = {k: {c: sum(r.calls[k][c] for r in records) for c in ("calls", "samples", "gradient_samples")}
             for k in names}
    max_used = [max([0.0] + [r.max_used[k][i] for r in records for k in names]) for i in range(len(budgets))]
    examples = [e for r in records for e in r.examples][:EXAMPLES]
    num_classes = max(r.num_classes for r in records)
    cumulative = summary.cumulative(data.broken, correct, epsilons, budgets)
    report = Report(
        clean_accuracy=int(correct.sum()) / n,
        robust_accuracy=summary.accuracy_curve(correct, worst, epsilons, budgets),
        # cascaded, an attack only ran where the earlier ones failed: its own curve is no "attack alone"
        by_attack=(dict(cumulative) if config.cascades else
                   {k: summary.accuracy_curve(correct, v, epsilons, budgets) for k, v in data.broken.items()}),
        n_examples=n,
        epsilons=epsilons,
        norm=config.norm,
        bounds=config.bounds,
        attacks=config.attack_descriptions(),
        seed=config.seed,
        batch_size=batch_size,
        device=device,
        versions=package_versions(),
        timings=seconds,
        max_perturbation=dict(zip(budgets, max_used)),
        num_classes=num_classes,
        warnings=list(notes),
        gradient_mode=config.gradient_mode,
        defenses=defenses,
        schedule=config.schedule,
        speedups=config.speedups(),
        cumulative=cumulative,
        cascade=config.cascades,
        per_class=summary.per_class(labels, correct, worst, epsilons, budgets, num_classes),
        perturbation=summary.perturbation_stats(data.broken, data.size, budgets),
        model_calls=calls,
        examples=examples,
        per_sample=per_sample,
        curve=curve,
    )
    return report, data


def _distances(distance: dict[str, Tensor], correct: Tensor, names: list[str]) -> dict[str, list[Any]]:
    """Per sample: ``distance``, the smallest verified adversarial distance any attack found (0 for a
    sample misclassified clean, ``inf`` where none was found), and ``distance_by``, the attack that
    found it (the first in order on ties; ``""`` where none did)."""
    stacked = torch.stack([distance[k].double() for k in names])
    best, which = stacked.min(dim=0)
    found = torch.isfinite(best) & correct
    best = torch.where(correct, best, torch.zeros_like(best))
    return {"distance": best.tolist(),
            "distance_by": [names[int(w)] if ok else "" for w, ok in zip(which, found.tolist())]}


def batch_examples(x: Tensor, y: Tensor, found: dict[str, Any], names: list[str], budgets: list[float],
                   offset: int) -> list[dict[str, Any]]:
    """Up to :data:`EXAMPLES` broken samples of a batch, each with its adversarial input at the
    smallest budget that broke it (the first attack in order on ties)."""
    stacked = torch.stack([found[k].broken for k in names])  # (attacks, n)
    worst, which = stacked.min(dim=0)
    out = []
    for i in (worst < len(budgets)).nonzero().squeeze(1).tolist()[:EXAMPLES]:
        res = found[names[int(which[i])]]
        out.append({
            "index": offset + i, "label": int(y[i]), "attack": names[int(which[i])],
            "eps": budgets[int(worst[i])], "adversarial_prediction": int(res.prediction[i]),
            "clean": x[i].detach().cpu().clone(), "adversarial": res.adversarial[i].detach().cpu().clone(),
        })
    return out
