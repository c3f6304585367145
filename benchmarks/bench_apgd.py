"""Benchmark: our APGD (CE, DLR, targeted DLR) against ART's AutoProjectedGradientDescent, in one process.

Setup: ``benchmarks.common.DigitsCNN`` trained (seeded, a few seconds) on the scikit-learn digits
(1x8x8 in [0, 1]); inputs: the whole digits test split (397 images), one batch for every tool.
One budget (Linf 0.1 by default), ``S`` = 100 steps, one restart, initial step ``2 * eps``.

Three pairs, each ours against ART with matched settings:

* ``apgd-ce``: ``APGD(loss="ce", steps=S)`` against ``AutoProjectedGradientDescent(loss_type=
  "cross_entropy", eps_step=2 * eps, max_iter=S, nb_random_init=1, batch_size=n)``;
* ``apgd-dlr``: ``APGD(loss="dlr")`` against ART's ``loss_type="difference_logits_ratio"``;
* ``apgd-t``: ``APGDT(target_classes=K)`` (targeted DLR towards each of the ``K`` = 9 highest-scoring
  wrong classes of the clean input, on the samples not fooled yet) against ART run the same way:
  ``targeted=True, loss_type="difference_logits_ratio"`` once per target class, each time on the
  samples no earlier target has fooled (re-predicted between targets). ART's targeted DLR is its
  untargeted DLR with the target as the label, minimised; it is not the paper's targeted DLR
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, so this pair compares two losses as well as
  two implementations.

Every tool is timed end to end (the attack, ART's NumPy round trips included; not the final
re-prediction), round-robin in one process: warm-up, then best and median of N, with paired
ratios (ART / ours in the same round) on wall and CPU time. Round ``i`` seeds ours with
``torch.Generator().manual_seed(i)`` and ART with ``np.random.seed(i)``; robust accuracy (the
fraction of inputs each tool's output, re-predicted, classifies correctly) is the mean over the
rounds, with the per-round counts of samples only ours, or only ART, broke.

Run from the repository root::

    python benchmarks/bench_apgd.py            # writes benchmarks/results/apgd.{json,md}
    python benchmarks/bench_apgd.py --quick    # a smoke run: few steps and images, writes nothing
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robustness.attacks.apgd import APGD, APGDT
from benchmarks.common import (
    RESULTS_DIR,
    best_of_interleaved,
    command_line,
    digits_split,
    machine_info,
    markdown_table,
    now_utc,
    paired_ratio,
    provenance_lines,
    save_results,
    train_digits_cnn,
)

log = logging.getLogger("bench_apgd")

PAIRS = ("apgd-ce", "apgd-dlr", "apgd-t")
DEFAULT_EPS = {"linf": 0.1, "l2": 0.6}


def build_tools(model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float, steps: int, targets: int
                ) -> tuple[dict[str, Callable[[int], Tensor]], dict[str, str]]:
    """Callables ``fn(seed)`` returning adversarial inputs, keyed ``"<pair> ours"`` / ``"<pair> ART"``."""
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    n = x.shape[0]
    classes = 10
    classifier = PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=classes,
        clip_values=(0.0, 1.0), device_type="cpu",
    )
    art_norm: float | int = np.inf if norm == "linf" else 2
    x_np, y_np = x.numpy(), y.numpy()
    ours = {
        "apgd-ce": APGD(norm=norm, steps=steps, loss="ce"),  # type: ignore[arg-type]
        "apgd-dlr": APGD(norm=norm, steps=steps, loss="dlr"),  # type: ignore[arg-type]
        "apgd-t": APGDT(norm=norm, steps=steps, target_classes=targets),  # type: ignore[arg-type]
    }

    def art_attack(loss_type: str, targeted: bool, batch: int) -> Any:
        return AutoProjectedGradientDescent(
            classifier, norm=art_norm, eps=eps, eps_step=2 * eps, max_iter=steps, targeted=targeted,
            nb_random_init=1, batch_size=batch, loss_type=loss_type, verbose=False,
        )

    def run_ours(name: str) -> Callable[[int], Tensor]:
        def run(seed: int) -> Tensor:
            return ours[name](model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed))
        return run

    def run_art(loss_type: str) -> Callable[[int], Tensor]:
        attack = art_attack(loss_type, False, n)

        def run(seed: int) -> Tensor:
            np.random.seed(seed)
            return torch.from_numpy(attack.generate(x_np, y=y_np))
        return run

    targeted_attack = art_attack("difference_logits_ratio", True, n)  # built once, like the others

    def run_art_targeted(seed: int) -> Tensor:
        """ART's targeted DLR once per target class (the K best-scoring wrong classes of the clean
        input, best first), each time on the correctly classified samples no target has fooled yet."""
        np.random.seed(seed)
        logits = classifier.predict(x_np, batch_size=n)
        alive = logits.argmax(axis=1) == y_np
        logits[np.arange(n), y_np] = -np.inf
        order = np.argsort(-logits, axis=1, kind="stable")[:, : min(targets, classes - 1)]
        adv = x_np.copy()
        for k in range(order.shape[1]):
            idx = np.flatnonzero(alive)
            if idx.size == 0:
                break
            out = targeted_attack.generate(x_np[idx], y=order[idx, k])
            fooled = np.argmax(classifier.predict(out, batch_size=n), axis=1) != y_np[idx]
            adv[idx[fooled]] = out[fooled]
            alive[idx[fooled]] = False
        return torch.from_numpy(adv)

    tools: dict[str, Callable[[int], Tensor]] = {
        "apgd-ce ours": run_ours("apgd-ce"),
        "apgd-ce ART": run_art("cross_entropy"),
        "apgd-dlr ours": run_ours("apgd-dlr"),
        "apgd-dlr ART": run_art("difference_logits_ratio"),
        "apgd-t ours": run_ours("apgd-t"),
        "apgd-t ART": run_art_targeted,
    }
    art_common = (f"AutoProjectedGradientDescent(PyTorchClassifier(...), norm={art_norm}, eps={eps}, "
                  f"eps_step={2 * eps:g}, max_iter={steps}, nb_random_init=1, batch_size={n}")
    desc = {
        "apgd-ce ours": ours["apgd-ce"].describe(),
        "apgd-ce ART": art_common + ", loss_type='cross_entropy').generate(x, y)",
        "apgd-dlr ours": ours["apgd-dlr"].describe(),
        "apgd-dlr ART": art_common + ", loss_type='difference_logits_ratio').generate(x, y)",
        "apgd-t ours": ours["apgd-t"].describe(),
        "apgd-t ART": (f"for each of the {min(targets, classes - 1)} best-scoring wrong classes t of the clean input "
                       f"(best first), on the samples not fooled yet: "
                       + art_common + ", targeted=True, loss_type='difference_logits_ratio').generate(x, t); "
                         "re-predicted between targets"),
    }
    return tools, desc


class _Recorder:
    """A zero-argument callable for the timer: calls ``fn(seed)`` with seeds 0, 1, 2, ... and keeps the outputs."""

    def __init__(self, fn: Callable[[int], Tensor]) -> None:
        self.fn = fn
        self.outputs: list[Tensor] = []

    def __call__(self) -> None:
        self.outputs.append(self.fn(len(self.outputs)).detach())


def _fooled(model: nn.Module, adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(adv.float()).argmax(dim=1) != y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--eps", type=float, default=None, help="the budget (default: 0.1 Linf, 0.6 L2)")
    parser.add_argument("--steps", type=int, default=100, help="APGD iterations (ART: max_iter)")
    parser.add_argument("--target-classes", type=int, default=9, help="target classes of APGD-T")
    parser.add_argument("--images", type=int, default=0, help="use the first N test images (0: all 397)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (best and median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the digits CNN")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 10 steps, 3 targets, 64 images, 1 round, no warm-up; writes only with --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"directory for apgd_<norm>.json and .md (default {RESULTS_DIR})")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the result files alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.target_classes, args.images, args.repeats, args.warmup = 10, 3, args.images or 64, 1, 0
    write = not args.no_write and (args.out is not None or not args.quick)
    out_dir = args.out or RESULTS_DIR
    eps = args.eps if args.eps is not None else DEFAULT_EPS[args.norm]

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    date = now_utc()
    info = machine_info("cpu", peers=("adversarial-robustness-toolbox", "scikit-learn"))
    model = train_digits_cnn(seed=0, epochs=args.epochs)
    _, _, x, y = digits_split()
    if args.images:
        x, y = x[: args.images], y[: args.images]
    n = x.shape[0]
    with torch.no_grad():
        clean_acc = (model(x).argmax(dim=1) == y).float().mean().item()
    log.info("CPU %s, %d threads, torch %s; digits test n=%d, clean accuracy %.3f; %s eps=%g, %d steps, "
             "%d target classes; load %s", info["cpu_model"], args.threads, torch.__version__, n, clean_acc,
             args.norm, eps, args.steps, args.target_classes, info["load_average_1m_at_start"])

    tools, desc = build_tools(model, x, y, norm=args.norm, eps=eps, steps=args.steps, targets=args.target_classes)
    recorders = {name: _Recorder(fn) for name, fn in tools.items()}
    timings = best_of_interleaved(recorders, repeats=args.repeats, warmup=args.warmup)  # type: ignore[arg-type]
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rounds = args.warmup + args.repeats

    fooled = {name: [_fooled(model, adv, y) for adv in r.outputs] for name, r in recorders.items()}
    strength: dict[str, Any] = {}
    for name, masks in fooled.items():
        acc = [1.0 - float(m.float().mean()) for m in masks]
        strength[name] = {"robust_accuracy_mean": float(np.mean(acc)), "robust_accuracy_min": min(acc),
                          "robust_accuracy_max": max(acc), "robust_accuracy_per_round": acc,
                          "broken_per_round": [int(m.sum()) for m in masks]}
    pairs: dict[str, Any] = {}
    for pair in PAIRS:
        o, a = timings[f"{pair} ours"], timings[f"{pair} ART"]
        fo, fa = fooled[f"{pair} ours"], fooled[f"{pair} ART"]
        so, sa = strength[f"{pair} ours"], strength[f"{pair} ART"]
        pairs[pair] = {
            "art_over_ours_best": a.best / o.best,
            "art_over_ours_paired_median": paired_ratio(a, o),
            "art_over_ours_cpu_paired_median": paired_ratio(a, o, cpu=True),
            "ours_minus_art_robust_accuracy_mean": so["robust_accuracy_mean"] - sa["robust_accuracy_mean"],
            "only_ours_broke_per_round": [int((p & ~q).sum()) for p, q in zip(fo, fa)],
            "only_art_broke_per_round": [int((q & ~p).sum()) for p, q in zip(fo, fa)],
            "ours_at_least_as_strong": so["robust_accuracy_mean"] <= sa["robust_accuracy_mean"] + 1e-9,
        }
        log.info("%s: ours %.3fs, ART %.3fs (ART/ours %.2fx best, %.2fx paired); robust accuracy ours %.3f, "
                 "ART %.3f", pair, o.best, a.best, pairs[pair]["art_over_ours_best"],
                 pairs[pair]["art_over_ours_paired_median"], so["robust_accuracy_mean"], sa["robust_accuracy_mean"])

    command = command_line()
    result = {
        "benchmark": "apgd",
        "command": command,
        "date": date,
        "quick": args.quick,
        "machine": {**info, "load_average_1m_at_end": load_end},
        "setup": {
            "model": f"benchmarks.common.DigitsCNN trained {args.epochs} epochs with Adam (lr 3e-3, batch 64, "
                     f"seed 0) on the digits training split (1400 images)",
            "inputs": f"digits test split, first {n} images 1x8x8 in [0, 1] (benchmarks.common.digits_split(seed=0)), "
                      f"one batch for every tool",
            "clean_accuracy": clean_acc,
            "norm": args.norm, "eps": eps, "steps": args.steps, "restarts": 1, "initial_step": f"2 * eps = {2 * eps:g}",
            "target_classes": args.target_classes,
            "robust_accuracy": f"fraction of the inputs classified correctly after the attack, by re-prediction of "
                               f"each tool's output; mean over the {rounds} seeded rounds (warm-up included)",
            "timing": f"the attack call, round-robin: {args.warmup} warm-up round(s), best and median of "
                      f"{args.repeats}; 'paired' = median over rounds of (ART / ours in the same round); CPU = "
                      f"process CPU time",
            "threads": args.threads,
        },
        "pairs": pairs,
        "strength": strength,
        "speed": {name: t.to_dict() for name, t in timings.items()},
        "descriptions": desc,
    }

    rows_speed = [[pair, f"{timings[f'{pair} ours'].best:.3f}", f"{timings[f'{pair} ART'].best:.3f}",
                   f"{pairs[pair]['art_over_ours_best']:.2f}x", f"{pairs[pair]['art_over_ours_paired_median']:.2f}x",
                   f"{pairs[pair]['art_over_ours_cpu_paired_median']:.2f}x"] for pair in PAIRS]

    def acc_cell(name: str) -> str:
        s = strength[name]
        return (f"{100 * s['robust_accuracy_mean']:.1f}% ({100 * s['robust_accuracy_min']:.1f}-"
                f"{100 * s['robust_accuracy_max']:.1f})")

    rows_strength = [[pair, acc_cell(f"{pair} ours"), acc_cell(f"{pair} ART"),
                      " / ".join(str(v) for v in pairs[pair]["only_ours_broke_per_round"]),
                      " / ".join(str(v) for v in pairs[pair]["only_art_broke_per_round"])] for pair in PAIRS]
    lines = [
        f"# APGD: ours against ART's AutoProjectedGradientDescent ({args.norm} eps={eps:g}, {args.steps} steps)"
        + (" - QUICK SMOKE RUN, not for quoting" if args.quick else ""),
        "",
        *provenance_lines({**info}, command, date),
        f"- load average (1 min) at end: {load_end}",
        "",
        "## Setup",
        "",
        f"- model: {result['setup']['model']}; clean accuracy {100 * clean_acc:.1f}% on {n} test images",
        f"- {args.norm} eps {eps:g}, {args.steps} steps, 1 restart, initial step 2 * eps, "
        f"APGD-T with {args.target_classes} target classes; {args.threads} torch threads",
        f"- timing: {result['setup']['timing']}",
        f"- robust accuracy: {result['setup']['robust_accuracy']}",
        "",
        "## Speed",
        "",
        markdown_table(["attack", "ours best (s)", "ART best (s)", "ART / ours (best)", "paired median",
                        "CPU paired median"], rows_speed),
        "",
        "## Strength",
        "",
        markdown_table(["attack", "ours robust acc (min-max)", "ART robust acc (min-max)",
                        "only ours broke (per round)", "only ART broke (per round)"], rows_strength),
        "",
        "Ours and ART draw their random starts from different generators, so a round pairs the tools on the "
        "seed index, not on the start. ART's APGD keeps only the last iterate, counts the steps that beat the "
        "best loss (the paper counts the steps that raise the loss) and computes the checkpoints in floating "
        "point; its targeted DLR is the untargeted DLR with the target as the label, minimised.",
        "",
        "## Settings",
        "",
        *[f"- {name}: `{text}`" for name, text in desc.items()],
    ]
    if write:
        save_results(out_dir, f"apgd_{args.norm}", result, "\n".join(lines))
    else:
        log.info("%s", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
