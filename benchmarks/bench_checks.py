"""The sanity checks' overhead (``robustness.checks``) as a fraction of the default evaluation.

The default evaluation is what ``robustness evaluate`` runs without arguments: both shipped
digits CNNs (standard and adversarially trained) on the digits test split (450 images), a
Linf sweep (FGSM and PGD over 0, 0.05, 0.1, 0.15, 0.2, 0.3) and an L2 sweep (PGD and
Carlini-Wagner over 0, 0.5, 1, 1.5, 2): four evaluations, at one torch thread as the CLI sets
for the shipped models.

Per evaluation, timed round-robin in one process (warm-up, then best and median of N):

* ``evaluate``: ``robustness.evaluate(..., checks=False)``;
* ``run_checks``: the checks alone, on the subset the runner gives them (the first 64 test
  images, with the sweep's per-sample results for them), on the same model;
* when the runner calls the checks itself (detected: ``evaluate(checks=True)`` returns a
  report whose ``checks`` are filled), ``evaluate(checks=True)`` as well, and the overhead is
  then measured directly as ``evaluate(checks=True) / evaluate(checks=False) - 1``.

Overhead of the whole set = the sum over the four evaluations of the checks' time over the
sum of the evaluations' time (target: under 10%). Per-check seconds come from the checks' own
debug log. The verdicts of the checks are recorded too.

Run from the repository root::

    python benchmarks/bench_checks.py            # writes benchmarks/results/checks.{json,md}
    python benchmarks/bench_checks.py --quick    # Linf sweep only, one round: a smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import robustness
from benchmarks.common import (
    RESULTS_DIR,
    best_of_interleaved,
    command_line,
    machine_info,
    markdown_table,
    now_utc,
    paired_ratio,
    provenance_lines,
    save_results,
)
from robustness import datasets, loading
from robustness.checks import run_checks
from robustness.cli import DEFAULT_ATTACKS, DEFAULT_EPS, SHIPPED_MODELS, parse_epsilons, split_attack_list
from robustness.runner import resolve_attacks

TARGET = 0.10  # the whole set of checks under 10% of the default evaluation
SUBSET = 64  # examples the runner hands to the checks


class _CheckTimes(logging.Handler):
    """Collects the per-check seconds that ``robustness.checks`` logs at debug level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "check %s: %s in %.3f s" and isinstance(record.args, tuple):
            self.seconds[str(record.args[0])].append(float(record.args[2]))


def _evaluation(model: torch.nn.Module, data: datasets.LoadedData, norm: str) -> dict[str, Any]:
    """The settings of one default evaluation, the subset and the kwargs ``run_checks`` needs."""
    names = split_attack_list(DEFAULT_ATTACKS[norm])
    epsilons = parse_epsilons(DEFAULT_EPS["digits"][norm])
    settings = dict(attacks=names, epsilons=epsilons, norm=norm, bounds=data.bounds, batch_size=256, seed=0,
                    progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = robustness.evaluate(model, data.dataset, checks=False, **settings)
    items = [data.dataset[i] for i in range(min(SUBSET, len(data.dataset)))]
    x = torch.stack([torch.as_tensor(item[0]) for item in items]).float()
    y = torch.tensor([int(item[1]) for item in items])
    attacks = resolve_attacks(names, norm)
    kwargs = dict(
        attacks=attacks,
        broken_at={k: torch.tensor(report.per_sample[f"broken_at:{k}"][: len(y)]) for k in attacks},
        correct=torch.tensor(report.per_sample["clean_prediction"][: len(y)]) == y,
        budgets=[e for e in epsilons if e > 0], robust_accuracy=report.robust_accuracy,
        by_attack=report.by_attack, norm=norm, bounds=data.bounds, num_classes=report.num_classes, seed=0,
    )
    return {"settings": settings, "x": x, "y": y, "kwargs": kwargs, "report": report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (best and median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the CLI uses 1 here)")
    parser.add_argument("--quick", action="store_true", help="Linf sweep only, 1 round, no warm-up (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for checks.json and .md")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the result files alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 1, 0
    norms = ["linf"] if args.quick else ["linf", "l2"]

    torch.set_num_threads(args.threads)
    date, info = now_utc(), machine_info("cpu")
    handler = _CheckTimes()
    check_log = logging.getLogger("robustness.checks")
    check_log.addHandler(handler)
    check_log.setLevel(logging.DEBUG)
    data = datasets.load_dataset("digits", split="test")
    models = {label: loading.load_model(str(path)).model for label, path in SHIPPED_MODELS.items()}

    rows: list[dict[str, Any]] = []
    integrated: bool | None = None
    for norm in norms:
        for label, model in models.items():
            ev = _evaluation(model, data, norm)
            if integrated is None:  # does the runner call the checks itself yet?
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    integrated = bool(robustness.evaluate(model, data.dataset, checks=True, **ev["settings"]).checks)

            def run_eval(checks: bool, ev: dict[str, Any] = ev, model: torch.nn.Module = model) -> None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    robustness.evaluate(model, data.dataset, checks=checks, **ev["settings"])

            def run_alone(ev: dict[str, Any] = ev, model: torch.nn.Module = model) -> None:
                run_checks(model, ev["x"], ev["y"], **ev["kwargs"])

            fns = {"evaluate": lambda: run_eval(False), "run_checks": run_alone}
            if integrated:
                fns["evaluate_with_checks"] = lambda: run_eval(True)
            handler.seconds.clear()
            timings = best_of_interleaved(fns, repeats=args.repeats, warmup=args.warmup)
            verdicts = run_checks(model, ev["x"], ev["y"], **ev["kwargs"])
            per_check = {name: min(s) for name, s in handler.seconds.items()}
            row = {
                "model": label, "norm": norm, "attacks": ev["settings"]["attacks"],
                "epsilons": ev["settings"]["epsilons"], "n_examples": ev["report"].n_examples,
                "subset": int(ev["y"].shape[0]),
                "timing": {k: t.to_dict() for k, t in timings.items()},
                "checks_over_evaluate_best": timings["run_checks"].best / timings["evaluate"].best,
                "checks_over_evaluate_paired_median": paired_ratio(timings["run_checks"], timings["evaluate"]),
                "checks_over_evaluate_cpu_paired_median": paired_ratio(timings["run_checks"], timings["evaluate"],
                                                                        cpu=True),
                "per_check_best_s": per_check,
                "verdicts": [c.to_dict() for c in verdicts],
            }
            if integrated:
                row["integrated_overhead_paired_median"] = paired_ratio(
                    timings["evaluate_with_checks"], timings["evaluate"]) - 1
            rows.append(row)
            print(f"{label} {norm}: evaluate {timings['evaluate'].best:.3f} s, run_checks "
                  f"{timings['run_checks'].best:.3f} s ({row['checks_over_evaluate_best']:.1%})"
                  + (f", evaluate(checks=True) {timings['evaluate_with_checks'].best:.3f} s" if integrated else ""))
            for c in verdicts:
                if c.status not in ("passed", "skipped"):
                    print(f"  {c.status}: {c.name}: {c.message[:160]}")
    check_log.removeHandler(handler)

    total_eval = sum(r["timing"]["evaluate"]["best_s"] for r in rows)
    total_checks = sum(r["timing"]["run_checks"]["best_s"] for r in rows)
    overhead = total_checks / total_eval
    total_integrated = None
    if integrated:
        total_integrated = sum(r["timing"]["evaluate_with_checks"]["best_s"] for r in rows) / total_eval - 1
    measured = total_integrated if total_integrated is not None else overhead
    verdict = "met" if measured < TARGET else "NOT met"
    if args.quick:  # the target is on all four evaluations; the Linf ones alone are the cheapest to evaluate
        verdict = f"not judged (quick run: Linf only; measured {measured:.1%})"
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    command = command_line()
    result = {
        "benchmark": "checks",
        "quick": args.quick,
        "command": command,
        "date": date,
        "machine": {**info, "load_average_1m_at_end": load_end},
        "setup": {
            "evaluations": "robustness evaluate's defaults: shipped digits CNNs (standard, adv-trained) on the digits "
                           f"test split; linf: {DEFAULT_ATTACKS['linf']} over {DEFAULT_EPS['digits']['linf']}; "
                           f"l2: {DEFAULT_ATTACKS['l2']} over {DEFAULT_EPS['digits']['l2']}"
                           + (" (quick: linf only)" if args.quick else ""),
            "subset": f"the first {SUBSET} test images, with the sweep's per-sample results for them",
            "timing": f"round-robin per evaluation: {args.warmup} warm-up round(s), best and median of "
                      f"{args.repeats}; paired = median over rounds of the ratio in the same round",
            "threads": args.threads,
            "runner_calls_checks": integrated,
        },
        "target": {
            "overhead_max": TARGET,
            "overhead_run_checks_over_evaluate": overhead,
            "overhead_evaluate_checks_true_over_false": total_integrated,
            "judged_on": "evaluate(checks=True) / evaluate(checks=False) - 1" if integrated
                         else "sum of run_checks best times / sum of evaluate best times",
            "verdict": verdict,
        },
        "evaluations": rows,
    }
    check_names = list(rows[0]["per_check_best_s"]) if rows else []
    lines = [
        "# Sanity checks: overhead on the default evaluation" + (" (QUICK smoke run: Linf only, one round)"
                                                                 if args.quick else ""),
        "",
        *provenance_lines(info, command, date),
        "",
        (f"Setup: {result['setup']['evaluations']}; checks on {result['setup']['subset']}. "
         f"Timing: {result['setup']['timing']}; {args.threads} thread(s)."),
        "",
        (f"**Target: the checks under {TARGET:.0%} of the default evaluation: {verdict} "
         f"(run_checks / evaluate, summed: {overhead:.1%}"
         + (f"; evaluate(checks=True) / evaluate(checks=False) - 1: {total_integrated:.1%}" if integrated else
            "; the runner does not call the checks yet, so the integrated overhead was not measured") + ").**"),
        "",
        markdown_table(
            ["evaluation", "evaluate best (s)", "run_checks best (s)", "checks / evaluate",
             "paired median", "CPU paired median"] + (["evaluate(checks=True) overhead"] if integrated else []),
            [[f"{r['model']} {r['norm']}", f"{r['timing']['evaluate']['best_s']:.3f}",
              f"{r['timing']['run_checks']['best_s']:.3f}", f"{r['checks_over_evaluate_best']:.1%}",
              f"{r['checks_over_evaluate_paired_median']:.1%}", f"{r['checks_over_evaluate_cpu_paired_median']:.1%}"]
             + ([f"{r['integrated_overhead_paired_median']:.1%}"] if integrated else []) for r in rows],
        ),
        "",
        "## Seconds per check (best round)",
        "",
        markdown_table(["check"] + [f"{r['model']} {r['norm']}" for r in rows],
                       [[name] + [f"{r['per_check_best_s'].get(name, float('nan')):.3f}" for r in rows]
                        for name in check_names]),
        "",
        "## Verdicts that did not pass",
        "",
    ]
    flagged = [f"- {r['model']} {r['norm']}, {c['name']} ({c['status']}): {c['message']}" for r in rows
               for c in r["verdicts"] if c["status"] not in ("passed", "skipped")]
    lines += flagged or ["- none"]
    print(f"overhead: {overhead:.1%} (run_checks / evaluate)"
          + (f", {total_integrated:.1%} (evaluate checks=True vs False)" if integrated else "") + f": {verdict}")
    if not args.no_write:
        save_results(args.out, "checks", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
