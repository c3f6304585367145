"""The robustness curve against a budget sweep: one ``epsilons="curve"`` run vs a 20-budget APGD-CE sweep.

Model: the shipped digits CNN (``robustness.load_model("digits-cnn")``); inputs: the first ``--n``
images of the digits test split (``robustness.datasets``). Per norm (Linf and L2), 20 evenly spaced
budgets (Linf 0.01..0.2, L2 0.1..2.0):

* curve: ``robustness.evaluate(model, data, attacks=<minimization attacks>, epsilons="curve",
  checks=False)``: the minimization attacks run once per batch without a budget; the curve is read at
  the 20 budgets (``report.curve.accuracy_at``);
* sweep: ``robustness.evaluate(model, data, attacks=["apgd-ce"], epsilons=[0, *budgets], checks=False)``
  (ascending schedule, warm starts, 100 steps).

Reported per norm: both wall times (one run each, after a warm-up batch), the robust accuracy of each
at every budget, and the largest gap ``curve - sweep`` (positive: the minimization attacks' curve lies
above the sweep there, i.e. they missed samples APGD-CE broke) and the largest ``|gap|``.

The minimization attacks are flags, by default those of ``robustness evaluate --eps curve``
(``--l2-attacks fmn,ddn,fab``, ``--linf-attacks fmn,fab``); a norm whose attacks are not all
registered is skipped with the reason in the results.

Usage (from the repository root)::

    python benchmarks/bench_curve.py                    # writes benchmarks/results/curve.{json,md}
    python benchmarks/bench_curve.py --n 64 --no-write  # a quick look
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import robustness
from benchmarks.common import (RESULTS_DIR, command_line, machine_info, markdown_table, now_utc, provenance_lines,
                               save_results)
from robustness import datasets
from robustness.registry import ATTACKS

BUDGETS: dict[str, list[float]] = {
    "linf": [round(0.01 * (i + 1), 4) for i in range(20)],
    "l2": [round(0.1 * (i + 1), 4) for i in range(20)],
}


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    loaded = datasets.load_dataset("digits", split="test")
    items = [loaded.dataset[i] for i in range(min(n, len(loaded.dataset)))]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_norm(norm: str, attacks: list[str], model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor],
             seed: int) -> dict[str, Any]:
    """Time the curve and the sweep on ``data`` and compare them at every budget."""
    missing = [a for a in attacks if a not in ATTACKS]
    if missing:
        return {"skipped": f"{', '.join(missing)} not registered on this branch (attacks asked for: "
                           f"{', '.join(attacks)})"}
    budgets = BUDGETS[norm]
    common = dict(norm=norm, checks=False, progress=False, seed=seed)
    x, y = data
    robustness.evaluate(model, (x[:8], y[:8]), attacks=attacks, epsilons="curve", **common)  # warm-up
    curve_report, curve_s = _timed(lambda: robustness.evaluate(model, data, attacks=attacks, epsilons="curve",
                                                               **common))
    sweep_report, sweep_s = _timed(lambda: robustness.evaluate(model, data, attacks=["apgd-ce"],
                                                               epsilons=[0, *budgets], **common))
    curve = curve_report.curve
    rows = [{"eps": e, "curve": curve.accuracy_at(e), "apgd_ce": sweep_report.robust_accuracy[e]} for e in budgets]
    gaps = [r["curve"] - r["apgd_ce"] for r in rows]
    return {
        "attacks": attacks, "budgets": budgets, "n": int(y.numel()), "clean_accuracy": curve.clean_accuracy,
        "curve_seconds": curve_s, "sweep_seconds": sweep_s, "median_distance": curve.median_distance,
        "largest_gap": max(gaps), "largest_abs_gap": max(abs(g) for g in gaps),
        "largest_gap_at": budgets[max(range(len(gaps)), key=lambda i: gaps[i])], "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Robustness curve vs a 20-budget APGD-CE sweep (digits CNN)", "",
             *provenance_lines(result["machine"], result["command"], result["date"]), ""]
    for norm, r in result["norms"].items():
        lines += [f"## {norm}", ""]
        if "skipped" in r:
            lines += [f"Skipped: {r['skipped']}.", ""]
            continue
        lines += [f"- n = {r['n']}, clean accuracy {100 * r['clean_accuracy']:.1f}%, curve from "
                  f"{', '.join(r['attacks'])}; median distance {r['median_distance']:.4g}",
                  f"- time: curve {r['curve_seconds']:.1f} s, APGD-CE sweep over 20 budgets {r['sweep_seconds']:.1f} s "
                  f"({r['sweep_seconds'] / r['curve_seconds']:.1f}x the curve's)",
                  f"- largest gap curve - sweep: {100 * r['largest_gap']:+.1f} points "
                  f"(at eps {r['largest_gap_at']:g}); "
                  f"largest |gap| {100 * r['largest_abs_gap']:.1f} points", ""]
        lines.append(markdown_table(["eps", "curve", "APGD-CE sweep", "gap"],
                                    [[f"{row['eps']:g}", f"{100 * row['curve']:.1f}%", f"{100 * row['apgd_ce']:.1f}%",
                                      f"{100 * (row['curve'] - row['apgd_ce']):+.1f}"] for row in r["rows"]]))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="test images (default 200)")
    parser.add_argument("--l2-attacks", default="fmn,ddn,fab", help="minimization attacks of the L2 curve")
    parser.add_argument("--linf-attacks", default="fmn,fab", help="minimization attacks of the Linf curve")
    parser.add_argument("--norms", default="linf,l2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the digits CNN is tiny: 1 is fastest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = robustness.load_model("digits-cnn")
    data = _data(args.n)
    attacks = {"linf": args.linf_attacks, "l2": args.l2_attacks}
    result: dict[str, Any] = {"command": command_line(), "date": now_utc(), "machine": machine_info("cpu"),
                              "norms": {}}
    for norm in args.norms.split(","):
        result["norms"][norm] = run_norm(norm, [a.strip() for a in attacks[norm].split(",")], model, data, args.seed)
        print(norm, {k: v for k, v in result["norms"][norm].items() if k != "rows"})
    text = markdown(result)
    if args.no_write:
        print(text)
    else:
        save_results(args.out, "curve", result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
