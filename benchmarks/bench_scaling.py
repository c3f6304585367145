"""How ``robustness.evaluate`` scales on the CPU with examples, PGD steps and budgets, and what
a budget sweep spends in forward+backward passes against the least it could.

Setup: the two shipped digits models (``robustness/weights/digits_cnn.pt``, standard training,
and ``digits_cnn_at.pt``, adversarially trained), loaded with ``robustness.loading.load_model``;
the digits test split (450 images of 1x8x8 in [0, 1]). One attack: PGD (Linf, cross-entropy,
random start, early stop), budgets spread evenly up to 0.2 (1 budget: 0.2; 2: 0.1, 0.2; 4: 0.05
... 0.2; 8: 0.025 ... 0.2). One axis varies at a time around 450 examples, 10 steps, 4 budgets:

* examples: 64, 128, 256, 450 (the first n of the test split);
* PGD steps: 5, 10, 20, 40;
* budgets: 1, 2, 4, 8.

Each configuration is timed end to end (``evaluate(..., checks=False)``: warm-up, then best and
median of N) and run once more, untimed, with a PGD that keeps count of its samples, to account
for the gradient passes (samples through a forward+backward pass) of the budget sweep:

* **runner**: what the runner spent, ``report.model_calls["pgd"]["gradient_samples"]``;
* **floor**: what an oracle that knew when each sample falls would spend on the same attack
  trajectories: per sample attacked, ``steps`` x the budgets at which it stays robust, plus the
  steps taken at the budget that broke it. The runner spends one pass more per sample that falls
  at a step (the forward that finds it fooled also computes a gradient, unused);
* **naive**: a per-budget sweep that reruns the whole attack on every sample at every budget
  without early stopping (as Foolbox does): examples x budgets x steps.

Run from the repository root::

    python benchmarks/bench_scaling.py            # writes benchmarks/results/scaling.{json,md}
    python benchmarks/bench_scaling.py --quick    # a smoke run: fewer points, one round
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import robustness
from robustness.attacks.pgd import PGD
from benchmarks.common import (
    RESULTS_DIR,
    best_of,
    command_line,
    machine_info,
    markdown_table,
    now_utc,
    provenance_lines,
    save_results,
)
from robustness.datasets import load_dataset, to_tensors
from robustness.loading import load_model

WEIGHTS = Path(robustness.__file__).resolve().parent / "weights"
MODELS = {"standard": WEIGHTS / "digits_cnn.pt", "adv-trained": WEIGHTS / "digits_cnn_at.pt"}
MAX_EPS = 0.2
DEFAULTS = {"n": 450, "steps": 10, "budgets": 4}
AXES = {"n": [64, 128, 256, 450], "steps": [5, 10, 20, 40], "budgets": [1, 2, 4, 8]}
QUICK_AXES = {"n": [64, 128], "steps": [5, 10], "budgets": [1, 2, 4]}

log = logging.getLogger("bench_scaling")


def budgets_for(k: int) -> list[float]:
    """``k`` budgets spread evenly up to :data:`MAX_EPS` (the largest is the same for every ``k``)."""
    return [round(MAX_EPS * (i + 1) / k, 6) for i in range(k)]


class _Rows(nn.Module):
    """Follows the rows of one PGD run through early stopping and counts its gradient passes.

    PGD (one restart) drops the rows it found fooled after each gradient step, so the rows of the
    next call are the current ones minus those: ``rows`` follows them. ``wasted`` counts the rows
    that were already fooled in a forward that also computed a gradient (the oracle stops there).
    """

    def __init__(self, model: nn.Module, y: Tensor) -> None:
        super().__init__()
        self.model, self.y = model, y
        self.rows = torch.arange(y.shape[0], device=y.device)
        self.gradient = 0
        self.wasted = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if x.shape[0] != self.rows.numel():
            raise RuntimeError("lost track of PGD's working rows: the accounting assumes one restart and early stop")
        if torch.is_grad_enabled() and x.requires_grad:
            fooled = out.argmax(1) != self.y[self.rows]
            self.gradient += x.shape[0]
            self.wasted += int(fooled.sum())
            self.rows = self.rows[~fooled]
        return out


@dataclass(frozen=True, kw_only=True)
class CountingPGD(PGD):
    """:class:`PGD` that also accounts its gradient passes (``tally``: a dict the caller owns)."""

    name: ClassVar[str] = "pgd"
    tally: dict[str, int]

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:  # type: ignore[override]
        rows = _Rows(model, y)
        out = super()._run(rows, x, y, **kwargs)
        self.tally["gradient"] = self.tally.get("gradient", 0) + rows.gradient
        self.tally["wasted"] = self.tally.get("wasted", 0) + rows.wasted
        return out


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, attack: PGD, budgets: list[float]) -> robustness.Report:
    return robustness.evaluate(model, (x, y), attacks=[attack], epsilons=[0, *budgets], batch_size=x.shape[0],
                               progress=False, checks=False, seed=0)


def measure(model: nn.Module, x: Tensor, y: Tensor, n: int, steps: int, k: int, repeats: int,
            warmup: int) -> dict[str, Any]:
    """Time one configuration and account its gradient passes."""
    xs, ys, budgets = x[:n], y[:n], budgets_for(k)
    timing = best_of(lambda: _evaluate(model, xs, ys, PGD(steps=steps), budgets), repeats=repeats, warmup=warmup)
    tally: dict[str, int] = {}
    report = _evaluate(model, xs, ys, CountingPGD(steps=steps, tally=tally), budgets)
    runner = report.model_calls["pgd"]["gradient_samples"]
    floor = tally["gradient"] - tally["wasted"]
    naive = n * k * steps
    # the floor by its definition, from the report: steps at every budget survived (known per sample)
    # plus the steps at the breaking budget (0..steps each, known only to the attack)
    attacked = [b for b, p, t in zip(report.per_sample["broken_at:pgd"], report.per_sample["clean_prediction"],
                                     report.per_sample["label"]) if p == t]
    survived = steps * sum(attacked)  # broken_at = index of the breaking budget = budgets survived (k: never)
    broken = sum(b < k for b in attacked)
    return {
        "n": n, "steps": steps, "budgets": budgets, "best_s": timing.best, "median_s": timing.median,
        "cpu_best_s": timing.cpu_best, "timing": timing.to_dict(),
        "clean_accuracy": report.clean_accuracy, "robust_accuracy": {str(e): report.robust_accuracy[e] for e in budgets},
        "passes": {"runner": runner, "floor": floor, "naive": naive, "counted_by_attack": tally["gradient"],
                   "wasted_on_fooled": tally["wasted"], "survived_part": survived, "breaking_part": floor - survived,
                   "consistent": tally["gradient"] == runner and 0 <= floor - survived <= steps * broken},
        "us_per_gradient_sample": 1e6 * timing.best / max(runner, 1),
    }


def _scaling_table(rows: list[dict[str, Any]], axis: str) -> str:
    header = [{"n": "examples", "steps": "PGD steps", "budgets": "budgets"}[axis], "best (s)", "median (s)",
              "s per 100 examples", "gradient passes", "us per pass", "robust acc. at 0.2"]
    body = []
    for r in rows:
        value = len(r["budgets"]) if axis == "budgets" else r[axis]
        body.append([value, f"{r['best_s']:.3f}", f"{r['median_s']:.3f}", f"{100 * r['best_s'] / r['n']:.3f}",
                     r["passes"]["runner"], f"{r['us_per_gradient_sample']:.1f}",
                     f"{r['robust_accuracy'][str(MAX_EPS)]:.1%}"])
    return markdown_table(header, body)


def _passes_table(rows: list[dict[str, Any]]) -> str:
    header = ["budgets", "floor", "runner", "naive", "runner / floor", "naive / runner", "naive / floor"]
    body = []
    for r in rows:
        p = r["passes"]
        body.append([len(r["budgets"]), p["floor"], p["runner"], p["naive"], f"{p['runner'] / max(p['floor'], 1):.3f}",
                     f"{p['naive'] / max(p['runner'], 1):.1f}", f"{p['naive'] / max(p['floor'], 1):.1f}"])
    return markdown_table(header, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer points on each axis, one round")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per configuration (default 5; 1 quick)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: a tiny model gains nothing from more, and one "
                             "thread is the least disturbed by other processes)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true", help="print only; leave the result files alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 5)
    axes = QUICK_AXES if args.quick else AXES
    date = now_utc()
    info = machine_info("cpu")
    x, y = to_tensors(load_dataset("digits", split="test").dataset)

    results: dict[str, Any] = {}
    for label, path in MODELS.items():
        model = load_model(str(path)).model.eval()
        results[label] = {}
        for axis, values in axes.items():
            rows = []
            for value in values:
                cfg = {**DEFAULTS, axis: value}
                log.info("%s: %d examples, %d steps, %d budgets", label, cfg["n"], cfg["steps"], cfg["budgets"])
                rows.append(measure(model, x, y, cfg["n"], cfg["steps"], cfg["budgets"], repeats, args.warmup))
            results[label][axis] = rows

    command = command_line()
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "scaling", "command": command, "date": date, "quick": args.quick,
        "machine": {**info, "load_average_1m_at_end": load_end},
        "setup": {"models": {k: v.name for k, v in MODELS.items()}, "data": "digits test split (450 images)",
                  "attack": "PGD Linf, cross-entropy, random start, early stop, 1 restart", "max_eps": MAX_EPS,
                  "defaults": DEFAULTS, "axes": axes, "repeats": repeats, "warmup": args.warmup,
                  "threads": args.threads, "checks": False},
        "results": results,
    }
    lines = [
        "# Scaling of `robustness.evaluate` on the CPU" + (" (QUICK RUN)" if args.quick else ""),
        "",
        *provenance_lines(info, command, date),
        "",
        (f"PGD (Linf, random start, early stop) on the shipped digits models; one axis at a time around "
         f"{DEFAULTS['n']} examples, {DEFAULTS['steps']} steps, {DEFAULTS['budgets']} budgets (evenly up to "
         f"{MAX_EPS}). Each configuration: {args.warmup} warm-up call, best and median of {repeats}; "
         f"`checks=False`. \"Gradient passes\": samples through a forward+backward pass."),
        "",
    ]
    for label in MODELS:
        for axis in axes:
            title = {"n": "examples", "steps": "PGD steps", "budgets": "budgets"}[axis]
            lines += [f"## {label}: time against {title}", "", _scaling_table(results[label][axis], axis), ""]
    lines += [
        "## The cost of a budget sweep in gradient passes",
        "",
        ("Floor: per sample attacked, steps x the budgets it survives + the steps taken at the budget that broke "
         "it (an oracle that stops each sample exactly when it falls, on the runner's own trajectories). Runner: "
         "the gradient passes it counted. Naive: every sample x every budget x every step (a per-budget sweep "
         "without early stopping). Runner - floor: one pass per sample that falls at a gradient step, whose "
         "forward found it fooled while also computing a gradient (the forward is needed to see it fall; only "
         "the backward is spent for nothing)."),
        "",
    ]
    for label in MODELS:
        rows = results[label]["budgets"]
        lines += [f"### {label}, {rows[0]['n']} examples, {rows[0]['steps']} steps", "", _passes_table(rows), ""]
    inconsistent = [(m, a) for m in results for a in results[m] for r in results[m][a] if not r["passes"]["consistent"]]
    if inconsistent:
        lines.append(f"**Accounting check failed** (the attack's count differs from the runner's) for {inconsistent}.")
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_write:
        save_results(args.out, "scaling", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
