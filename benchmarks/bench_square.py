"""Square attack, Linf and L2: ours against ART's ``SquareAttack``, same model, inputs and query budget.

Setup: ``benchmarks.common.DigitsCNN`` trained (seeded, a few seconds) on the scikit-learn
digits; inputs: the test-split images (1x8x8 in [0, 1]) that the model classifies correctly,
one batch for both tools. Per norm, one budget (Linf ``--linf-eps``, L2 ``--l2-eps``) and a
query budget of ``Q`` model evaluations per sample (``--queries``):

* ours: ``Square(norm=..., queries=Q, p_init=0.8)``: Q counts the starting point; fooled
  samples leave the batch at once;
* ART: ``SquareAttack(PyTorchClassifier(...), norm=..., eps=..., max_iter=Q - 1, p_init=0.8,
  nb_restarts=1, batch_size=n)``: its ``max_iter`` proposals after its one initial point give the
  same number of proposals per sample as ours (ART also evaluates the clean inputs, and
  re-evaluates its current points every iteration; the counts below show what that costs).

Measured per tool, in one process, round-robin (``best_of_interleaved``): wall time of one call
(best, median, process CPU time), robust accuracy (re-prediction of the outputs; mean, min and
max over the seeded rounds: ours takes the seed as its generator, ART draws from NumPy's and
Python's global generators, seeded per round), and the model evaluations per sample (a
counting wrapper around the model: rows through ``forward`` divided by the number of inputs;
for ours this is exactly the mean number of queries a sample used). Ratios ART / ours are
measured in the same run.

Run from the repository root::

    python benchmarks/bench_square.py            # writes benchmarks/results/square.{json,md}
    python benchmarks/bench_square.py --quick    # a small smoke run; prints only (unless --out is given)
"""

from __future__ import annotations

import argparse
import os
import random
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

from robustness.attacks.square import Square
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

P_INIT = 0.8


class CountingModel(nn.Module):
    """Wraps a model and counts the rows (sample evaluations) it is called on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.model(x)


class _Rounds:
    """A zero-argument callable for the timer: runs ``fn(seed)`` with seeds 0, 1, 2, ... and
    keeps, per round, the adversarial inputs and the model evaluations it took."""

    def __init__(self, fn: Callable[[int], Tensor], counter: CountingModel) -> None:
        self.fn = fn
        self.counter = counter
        self.outputs: list[Tensor] = []
        self.rows: list[int] = []

    def __call__(self) -> None:
        self.counter.rows = 0
        self.outputs.append(self.fn(len(self.outputs)))
        self.rows.append(self.counter.rows)


def build_tools(counter: CountingModel, x: Tensor, y: Tensor, norm: str, eps: float, queries: int
                ) -> tuple[dict[str, Callable[[int], Tensor]], dict[str, str]]:
    """``fn(seed) -> adversarial inputs`` for ours and ART, both calling the model through ``counter``."""
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier

    n = x.shape[0]
    ours = Square(norm=norm, queries=queries, p_init=P_INIT)
    classifier = PyTorchClassifier(
        model=counter, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
        clip_values=(0.0, 1.0), device_type="cpu",
    )
    art = SquareAttack(classifier, norm=np.inf if norm == "linf" else 2, eps=eps, max_iter=queries - 1,
                       p_init=P_INIT, nb_restarts=1, batch_size=n, verbose=False)
    x_np, y_np = x.numpy(), y.numpy()

    def run_ours(seed: int) -> Tensor:
        return ours(counter, x, y, eps=eps, generator=torch.Generator().manual_seed(seed))

    def run_art(seed: int) -> Tensor:
        np.random.seed(seed)  # ART draws from the global generators
        random.seed(seed)
        with np.errstate(invalid="ignore", divide="ignore"):  # ART's L2 start is 0/0 on 8x8 images
            return torch.from_numpy(art.generate(x_np, y=y_np))

    desc = {
        "ours": f"{ours.describe()}(model, x, y, eps={eps:g}, generator=torch.Generator().manual_seed(seed))",
        "ART": f"SquareAttack(PyTorchClassifier(model, clip_values=(0, 1)), norm={'np.inf' if norm == 'linf' else 2}, "
               f"eps={eps:g}, max_iter={queries - 1}, p_init={P_INIT}, nb_restarts=1, batch_size={n})"
               f".generate(x, y) after np.random.seed(seed), random.seed(seed)",
    }
    return {"ours": run_ours, "ART": run_art}, desc


def _robust(model: nn.Module, outputs: list[Tensor], x: Tensor, y: Tensor, norm: str) -> dict[str, Any]:
    accs, sizes = [], []
    for adv in outputs:
        with torch.no_grad():
            accs.append(float((model(adv.float()).argmax(dim=1) == y).float().mean()))
        delta = (adv.float() - x).flatten(1)
        sizes.append(float((delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)).max()))
    return {"mean": float(np.mean(accs)), "min": min(accs), "max": max(accs), "per_seed": accs,
            "max_perturbation": max(sizes)}


def run_norm(model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, queries: int,
             repeats: int, warmup: int) -> dict[str, Any]:
    counter = CountingModel(model).eval()
    tools, desc = build_tools(counter, x, y, norm, eps, queries)
    rounds = {name: _Rounds(fn, counter) for name, fn in tools.items()}
    timings = best_of_interleaved(rounds, repeats=repeats, warmup=warmup)  # type: ignore[arg-type]
    n = x.shape[0]
    out: dict[str, Any] = {"norm": norm, "eps": eps, "queries": queries, "descriptions": desc, "tools": {}}
    for name, r in rounds.items():
        t = timings[name]
        out["tools"][name] = {
            "timing": t.to_dict(),
            "robust_accuracy": _robust(model, r.outputs, x, y, norm),
            "evaluations_per_sample": {"mean": float(np.mean(r.rows)) / n, "per_seed": [k / n for k in r.rows]},
        }
    ours, art = out["tools"]["ours"], out["tools"]["ART"]
    out["ratios_art_over_ours"] = {
        "time_best": timings["ART"].best / timings["ours"].best,
        "time_paired_median": paired_ratio(timings["ART"], timings["ours"]),
        "cpu_time_paired_median": paired_ratio(timings["ART"], timings["ours"], cpu=True),
        "evaluations_per_sample": art["evaluations_per_sample"]["mean"] / ours["evaluations_per_sample"]["mean"],
    }
    out["robust_accuracy_ours_minus_art"] = ours["robust_accuracy"]["mean"] - art["robust_accuracy"]["mean"]
    return out


def _markdown(result: dict[str, Any], info: dict[str, Any], n_seeds: int) -> str:
    setup = result["setup"]
    rows = []
    for r in result["runs"]:
        for name in ("ours", "ART"):
            t = r["tools"][name]
            acc = t["robust_accuracy"]
            rows.append([
                f"{r['norm']} eps={r['eps']:g}", name, f"{100 * acc['mean']:.1f}% ({100 * acc['min']:.1f}-"
                f"{100 * acc['max']:.1f})", f"{t['evaluations_per_sample']['mean']:.1f}",
                f"{t['timing']['best_s']:.3f}", f"{t['timing']['median_s']:.3f}", f"{t['timing']['cpu_best_s']:.3f}",
            ])
    ratio_rows = [[f"{r['norm']} eps={r['eps']:g}", f"{r['ratios_art_over_ours']['time_best']:.2f}x",
                   f"{r['ratios_art_over_ours']['time_paired_median']:.2f}x",
                   f"{r['ratios_art_over_ours']['cpu_time_paired_median']:.2f}x",
                   f"{r['ratios_art_over_ours']['evaluations_per_sample']:.2f}x",
                   f"{100 * r['robust_accuracy_ours_minus_art']:+.1f} points"] for r in result["runs"]]
    lines = [
        "# Square attack: ours against ART's SquareAttack" + (" (quick smoke run)" if setup["quick"] else ""),
        "",
        *provenance_lines(info, result["command"], result["date"]),
        "",
        (f"Model: {setup['model']}. Inputs: {setup['inputs']}. Query budget {setup['queries']} per sample for both "
         f"(ours: `queries={setup['queries']}`, the start included; ART: `max_iter={setup['queries'] - 1}` proposals "
         f"after its initial point), p_init={P_INIT}, one restart. Timed round-robin in one process: "
         f"{setup['warmup']} warm-up round(s), best and median of {setup['repeats']}; every round a new seed "
         f"(0..{n_seeds - 1}); robust accuracy is the mean over those seeds (min-max in brackets). Evaluations per "
         "sample: rows through the model's forward divided by the number of inputs (for ours, the mean number of "
         "queries a sample used; ART also re-evaluates its current points every iteration)."),
        "",
        markdown_table(["budget", "tool", "robust accuracy", "evaluations / sample", "best (s)", "median (s)",
                        "CPU best (s)"], rows, align="llrrrrr"),
        "",
        "## Ratios, ART / ours, measured in this run",
        "",
        markdown_table(["budget", "time (best)", "time (paired median)", "CPU time (paired median)",
                        "evaluations / sample", "robust accuracy, ours - ART"], ratio_rows),
        "",
        "## Calls",
        "",
        *[f"- {r['norm']} {name}: `{r['descriptions'][name]}`" for r in result["runs"] for name in ("ours", "ART")],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000, help="query budget per sample (ART: max_iter = Q - 1)")
    parser.add_argument("--linf-eps", type=float, default=0.1)
    parser.add_argument("--l2-eps", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (best and median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the digits CNN")
    parser.add_argument("--images", type=int, default=0, help="use only the first N inputs (0: all)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 48 images, 60 queries, 1 round, no warm-up; writes only with --out")
    parser.add_argument("--out", type=Path, default=None, help=f"directory for square.json and .md ({RESULTS_DIR})")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the result files alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.repeats, args.warmup, args.epochs = 60, 1, 0, 5
        args.images = args.images or 48
    write = not args.no_write and (args.out is not None or not args.quick)
    out_dir = args.out or RESULTS_DIR
    if args.queries < 2:
        parser.error("--queries must be at least 2 (ART needs max_iter >= 1)")

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    date = now_utc()
    info = machine_info("cpu", peers=("adversarial-robustness-toolbox", "scikit-learn"))
    model = train_digits_cnn(seed=0, epochs=args.epochs)
    _, _, x_test, y_test = digits_split()
    with torch.no_grad():
        correct = model(x_test).argmax(dim=1) == y_test
    x, y = x_test[correct].contiguous(), y_test[correct].contiguous()
    if args.images:
        x, y = x[: args.images], y[: args.images]
    n = x.shape[0]
    print(f"CPU {info['cpu_model']}, {args.threads} threads, torch {torch.__version__}; {n} correctly classified "
          f"digits test images (clean accuracy {float(correct.float().mean()):.3f}); {args.queries} queries; "
          f"load {info['load_average_1m_at_start']}")

    runs = [run_norm(model, x, y, norm, eps, args.queries, args.repeats, args.warmup)
            for norm, eps in (("linf", args.linf_eps), ("l2", args.l2_eps))]
    n_seeds = args.warmup + args.repeats
    result = {
        "benchmark": "square",
        "command": command_line(),
        "date": date,
        "machine": {**info, "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "setup": {
            "quick": args.quick,
            "model": f"benchmarks.common.DigitsCNN trained {args.epochs} epochs with Adam (lr 3e-3, batch 64, seed 0) "
                     "on the digits training split",
            "inputs": f"the {n} digits test images (1x8x8 in [0, 1], digits_split(seed=0)) the model classifies "
                      f"correctly{f', first {args.images}' if args.images else ''}, one batch for both tools",
            "queries": args.queries,
            "p_init": P_INIT,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "threads": args.threads,
            "robust_accuracy": f"fraction of the inputs still classified correctly, by re-prediction; over the "
                               f"{n_seeds} seeded rounds (the warm-up and timed ones, seeds 0..{n_seeds - 1})",
        },
        "runs": runs,
    }
    md = _markdown(result, info, n_seeds)
    print(md)
    if write:
        save_results(out_dir, "square", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
