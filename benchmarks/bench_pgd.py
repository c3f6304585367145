"""PGD-10 speed: our PGD against the floor (10 hand-written forward+backward steps) and peers.

Setup: a small fixed-seed CNN (3 conv + linear, random weights) on a batch of 256 CIFAR-shaped
inputs (3x32x32, uniform in [0, 1]), seeded labels, Linf eps = 8/255, step 2/255 (= 2.5 * eps /
steps), random start, 10 steps, cross-entropy. Every contender runs in this one process on the
same model, inputs, device and thread count, timed round-robin: warm-up, then best (and
median) of N. Ratios are to the floor of the same run.

Contenders:

1. floor: random start, then 10 x (forward, ``torch.autograd.grad`` w.r.t. the input, sign
   step, projection, clamp), nothing else: the least any PGD-10 can cost;
2. ours, ``early_stop=False``: every sample runs every step, like the floor and the peers
   (our attack also does one extra forward after the last step to keep the best iterate);
3. torchattacks ``PGD``; 4. Foolbox ``LinfPGD``; 5. ART ``ProjectedGradientDescent`` (numpy in/out);
6. ours with the default ``early_stop=True``, reported apart: samples leave the batch once
   fooled, so its time depends on the model and labels and is not like-for-like.

An L2 pair (ours with ``early_stop=False`` against an L2 floor, eps = 0.5) is timed too.

Run from the repository root::

    python benchmarks/bench_pgd.py            # writes benchmarks/results/pgd10.{json,md}
    python benchmarks/bench_pgd.py --profile  # also prints where our attack's time goes
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robustness.attacks.pgd import PGD
from benchmarks.common import (
    RESULTS_DIR,
    Timing,
    best_of_interleaved,
    cifar_batch,
    cifar_cnn,
    command_line,
    machine_info,
    markdown_table,
    now_utc,
    paired_ratio,
    provenance_lines,
    save_results,
)
from robustness.norms import norm_of

TARGET_RATIO = 1.10
EPS_LINF = 8 / 255
EPS_L2 = 0.5
STEPS = 10
REL_STEP = 2.5 / STEPS  # step = 0.25 * eps = 2/255 for Linf: the same for every contender


# --------------------------------------------------------------------------- the floor


def floor_pgd_linf(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
                   generator: torch.Generator) -> Tensor:
    """Minimal Linf PGD: random start, ``steps`` x (forward, input gradient, sign step, project, clamp)."""
    x = x.detach()
    x_adv = (x + (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 1) * eps).clamp(0, 1)
    lower, upper = x - eps, x + eps
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * grad.sign(), lower), upper).clamp(0, 1)
    return x_adv


def floor_pgd_l2(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
                 generator: torch.Generator) -> Tensor:
    """Minimal L2 PGD: random start in the ball, ``steps`` x (forward, input gradient, normalised step, project, clamp)."""
    x = x.detach()
    n = x.shape[0]
    view = (-1,) + (1,) * (x.dim() - 1)
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
    radius = torch.rand((n,), generator=generator, dtype=x.dtype, device=x.device) ** (1.0 / x[0].numel())
    x_adv = (x + eps * radius.view(view) * direction).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        delta = x_adv.detach() + alpha * grad - x
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).view(view)
        x_adv = (x + delta).clamp(0, 1)
    return x_adv


# --------------------------------------------------------------------------- contenders


def build_contenders(model: nn.Module, x: Tensor, y: Tensor) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Zero-argument callables returning adversarial inputs (tensor or array), and a description of each.

    Everything runs on ``x``'s device (ART through ``device_type="gpu"`` on CUDA, NumPy in and out)."""
    import foolbox as fb
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    alpha = REL_STEP * EPS_LINF
    ours_like = PGD(norm="linf", steps=STEPS, early_stop=False)
    ta_pgd = torchattacks.PGD(model, eps=EPS_LINF, alpha=alpha, steps=STEPS, random_start=True)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    fb_pgd = fb.attacks.LinfPGD(steps=STEPS, rel_stepsize=REL_STEP, random_start=True)
    classifier = PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
        clip_values=(0.0, 1.0), device_type="gpu" if x.is_cuda else "cpu",
    )
    art_pgd = ProjectedGradientDescent(
        estimator=classifier, norm=np.inf, eps=EPS_LINF, eps_step=alpha, max_iter=STEPS,
        batch_size=x.shape[0], num_random_init=1, verbose=False,
    )
    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()

    def floor() -> Tensor:
        return floor_pgd_linf(model, x, y, EPS_LINF, alpha, STEPS, torch.Generator(device=x.device).manual_seed(0))

    def ours() -> Tensor:
        return ours_like(model, x, y, eps=EPS_LINF)

    def torchattacks_pgd() -> Tensor:
        return ta_pgd(x, y)

    def foolbox_pgd() -> Tensor:
        _, clipped, _ = fb_pgd(fmodel, x, y, epsilons=EPS_LINF)
        return clipped

    def art_pgd_run() -> np.ndarray:
        return art_pgd.generate(x=x_np, y=y_np)

    fns: dict[str, Callable[[], Any]] = {
        "floor": floor,
        "ours (early_stop=False)": ours,
        "torchattacks PGD": torchattacks_pgd,
        "Foolbox LinfPGD": foolbox_pgd,
        "ART ProjectedGradientDescent": art_pgd_run,
    }
    desc = {
        "floor": f"hand-written: random start + {STEPS} x (forward, autograd.grad w.r.t. input, sign step, "
                 f"project, clamp)",
        "ours (early_stop=False)": ours_like.describe(),
        "torchattacks PGD": f"torchattacks.PGD(model, eps=8/255, alpha=2/255, steps={STEPS}, random_start=True)",
        "Foolbox LinfPGD": f"fb.attacks.LinfPGD(steps={STEPS}, rel_stepsize={REL_STEP}, random_start=True) on "
                           f"fb.PyTorchModel(model, bounds=(0, 1)), epsilons=8/255",
        "ART ProjectedGradientDescent": f"ProjectedGradientDescent(PyTorchClassifier(...), norm=np.inf, eps=8/255, "
                                        f"eps_step=2/255, max_iter={STEPS}, batch_size={x.shape[0]}, "
                                        f"num_random_init=1), numpy inputs",
    }
    return fns, desc


def check_output(model: nn.Module, x: Tensor, y: Tensor, adv: Any, eps: float, norm: str) -> dict[str, float]:
    """Largest perturbation and the fraction of inputs misclassified at the adversarial point (sanity check)."""
    adv_t = torch.as_tensor(adv).to(x.dtype)
    with torch.no_grad():
        fooled = (model(adv_t).argmax(dim=1) != y).float().mean().item()
    return {
        "max_perturbation": float(norm_of(adv_t - x, norm).max()),  # type: ignore[arg-type]
        "misclassified": fooled,
        "in_bounds": bool(adv_t.min() >= 0 and adv_t.max() <= 1),
    }


# --------------------------------------------------------------------------- profiling


def profile_ours(model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float) -> str:
    """cProfile of one call of our PGD (early_stop=False) next to the floor: the top functions by own time."""
    ours = PGD(norm=norm, steps=STEPS, early_stop=False)  # type: ignore[arg-type]
    floor_fn = floor_pgd_linf if norm == "linf" else floor_pgd_l2
    out = io.StringIO()
    for label, fn in (
        ("floor", lambda: floor_fn(model, x, y, eps, REL_STEP * eps, STEPS, torch.Generator().manual_seed(0))),
        ("ours", lambda: ours(model, x, y, eps=eps)),
    ):
        fn()
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        out.write(f"==== cProfile: {label} ({norm}) ====\n")
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof_t:
        ours(model, x, y, eps=eps)
    out.write(f"==== torch.profiler: ours ({norm}) ====\n")
    out.write(prof_t.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    return out.getvalue()


# --------------------------------------------------------------------------- main


def _row(name: str, norm: str, like: bool, t: Timing, floor: Timing, check: dict[str, Any], desc: str,
         threads: int) -> dict[str, Any]:
    return {
        "contender": name, "norm": norm, "like_for_like": like, "threads": threads,
        "best_s": t.best, "median_s": t.median, "cpu_best_s": t.cpu_best,
        "ratio_to_floor_best": t.best / floor.best,
        "ratio_to_floor_paired_median": paired_ratio(t, floor),
        "cpu_ratio_to_floor_paired_median": paired_ratio(t, floor, cpu=True),
        "timing": t.to_dict(), "check": check, "description": desc,
    }


def _table(rows: list[dict[str, Any]], with_check: bool = True) -> str:
    header = ["contender", "best (s)", "median (s)", "best / floor", "paired median / floor",
              "CPU time, paired median / floor"]
    if with_check:
        header.append("misclassified after")
    body = []
    for r in rows:
        cells = [r["contender"], f"{r['best_s']:.3f}", f"{r['median_s']:.3f}", f"{r['ratio_to_floor_best']:.3f}x",
                 f"{r['ratio_to_floor_paired_median']:.3f}x", f"{r['cpu_ratio_to_floor_paired_median']:.3f}x"]
        if with_check:
            cells.append(f"{r['check']['misclassified']:.1%}")
        body.append(cells)
    return markdown_table(header, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (best and median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the main tables")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--no-single-thread", action="store_true",
                        help="skip the 1-thread cross-check of ours against the floor")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for pgd10.json and pgd10.md")
    parser.add_argument("--profile", action="store_true", help="print a cProfile/torch.profiler breakdown of ours")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the result files alone")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model = cifar_cnn(seed=0)
    x, y = cifar_batch(args.batch, seed=0)
    with torch.no_grad():
        clean_pred = model(x).argmax(dim=1)
    clean_acc = (clean_pred == y).float().mean().item()
    date = now_utc()
    info = machine_info(device, peers=("torchattacks", "foolbox", "adversarial-robustness-toolbox", "eagerpy"))
    print(f"CPU {info['cpu_model']}, {args.threads} threads, torch {torch.__version__}; batch {args.batch}x3x32x32, "
          f"clean accuracy {clean_acc:.3f} (random weights, random labels); load {info['load_average_1m_at_start']}")

    # --- Linf: floor, ours like for like, peers, and ours with its default early stopping, one round-robin
    fns, desc = build_contenders(model, x, y)
    ours_default = PGD(norm="linf", steps=STEPS)
    es_seeded = "ours, default early_stop=True, seeded labels"
    es_clean = "ours, default early_stop=True, labels = clean predictions"
    fns[es_seeded] = lambda: ours_default(model, x, y, eps=EPS_LINF)
    fns[es_clean] = lambda: ours_default(model, x, clean_pred, eps=EPS_LINF)
    desc[es_seeded] = desc[es_clean] = ours_default.describe()
    timings = best_of_interleaved(fns, repeats=args.repeats, warmup=args.warmup)
    labels = {es_clean: clean_pred}
    checks = {name: check_output(model, x, labels.get(name, y), fn(), EPS_LINF, "linf") for name, fn in fns.items()}
    floor_t = timings["floor"]
    rows = [_row(name, "linf", name not in (es_seeded, es_clean), t, floor_t, checks[name], desc[name], args.threads)
            for name, t in timings.items()]

    # --- L2 pair
    ours_l2 = PGD(norm="l2", steps=STEPS, early_stop=False)
    alpha_l2 = REL_STEP * EPS_L2
    l2_fns: dict[str, Callable[[], Any]] = {
        "floor (l2)": lambda: floor_pgd_l2(model, x, y, EPS_L2, alpha_l2, STEPS, torch.Generator().manual_seed(0)),
        "ours l2 (early_stop=False)": lambda: ours_l2(model, x, y, eps=EPS_L2),
    }
    l2_desc = {"floor (l2)": "hand-written L2: random start in the ball + 10 x (forward, autograd.grad w.r.t. input, "
                             "normalised step, project, clamp)",
               "ours l2 (early_stop=False)": ours_l2.describe()}
    l2_t = best_of_interleaved(l2_fns, repeats=args.repeats, warmup=args.warmup)
    rows += [_row(name, "l2", True, t, l2_t["floor (l2)"], check_output(model, x, y, l2_fns[name](), EPS_L2, "l2"),
                  l2_desc[name], args.threads) for name, t in l2_t.items()]

    # --- 1-thread cross-check: one thread is far less disturbed by other processes on the cores
    single: list[dict[str, Any]] = []
    if not args.no_single_thread:
        torch.set_num_threads(1)
        one = {"floor": fns["floor"], "ours (early_stop=False)": fns["ours (early_stop=False)"], **l2_fns}
        one_t = best_of_interleaved(one, repeats=args.repeats + 2, warmup=args.warmup)
        for name, t in one_t.items():
            norm = "l2" if "l2" in name else "linf"
            ref = one_t["floor (l2)"] if norm == "l2" else one_t["floor"]
            single.append(_row(name, norm, True, t, ref, {}, desc.get(name) or l2_desc[name], 1))
        torch.set_num_threads(args.threads)

    ours_row = next(r for r in rows if r["contender"] == "ours (early_stop=False)")
    l2_row = next(r for r in rows if r["contender"] == "ours l2 (early_stop=False)")
    single_ours = next((r for r in single if r["contender"] == "ours (early_stop=False)"), None)
    measures = {f"best times at {args.threads} threads": ours_row["ratio_to_floor_best"],
                f"paired median at {args.threads} threads": ours_row["ratio_to_floor_paired_median"],
                f"CPU time paired median at {args.threads} threads": ours_row["cpu_ratio_to_floor_paired_median"]}
    if single_ours:
        measures.update({"best times at 1 thread": single_ours["ratio_to_floor_best"],
                         "paired median at 1 thread": single_ours["ratio_to_floor_paired_median"],
                         "CPU time paired median at 1 thread": single_ours["cpu_ratio_to_floor_paired_median"]})
    met_on = [k for k, v in measures.items() if v <= TARGET_RATIO]
    state = "met" if len(met_on) == len(measures) else ("NOT met" if not met_on else "mixed, NOT met on every measure")
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    command = command_line()
    result = {
        "benchmark": "pgd10",
        "command": command,
        "date": date,
        "machine": {**info, "load_average_1m_at_end": load_end},
        "setup": {
            "model": "Conv(3,16)-ReLU-Pool, Conv(16,32)-ReLU-Pool, Conv(32,32)-ReLU-Pool, Linear(512,10) "
                     "(benchmarks.common.cifar_cnn); random weights, torch.manual_seed(0); eval mode; "
                     "parameters keep requires_grad=True, as in a user model",
            "inputs": f"{args.batch}x3x32x32 uniform in [0,1], labels uniform in 0..9 (torch.Generator seed 0)",
            "clean_accuracy": clean_acc,
            "eps_linf": EPS_LINF, "eps_l2": EPS_L2, "steps": STEPS,
            "step_size": "0.25 * eps (2/255 for Linf) for every contender; random start for every contender",
            "timing": f"round-robin over contenders: {args.warmup} warm-up round(s), then {args.repeats} timed rounds "
                      f"({args.repeats + 2} for the 1-thread cross-check); best and median wall-clock seconds; "
                      f"'paired' = median over rounds of (contender / floor timed in the same round); "
                      f"CPU = process CPU time of the call",
            "threads": args.threads,
        },
        "target": {
            "ours_over_floor_max": TARGET_RATIO,
            "ours_over_floor": measures,
            "l2_ours_over_floor_best": l2_row["ratio_to_floor_best"],
            "l2_ours_over_floor_paired_median": l2_row["ratio_to_floor_paired_median"],
            "verdict": state,
            "judged_on": "met only if met on every measure (best, paired median and CPU-time paired median "
                         "ratios, at the main thread count and, when run, at 1 thread)",
        },
        "results": rows,
        "single_thread_cross_check": single,
    }

    lines = [
        "# PGD-10 speed: ours against the floor and peers",
        "",
        *provenance_lines(info, command, date),
        (f"- load average (1 min): {info['load_average_1m_at_start']:.2f} at start, {load_end:.2f} at end "
        f"(on {info['usable_cores']} usable cores; other processes share this machine)"),
        "",
        (f"Model: a small CNN (3 conv + linear, fixed-seed random weights); inputs: {args.batch}x3x32x32 uniform in "
        f"[0, 1], seeded labels (clean accuracy {clean_acc:.1%}). Linf eps = 8/255, step 2/255, random start, "
        f"{STEPS} steps, cross-entropy, for every contender. Timed round-robin in one process: {args.warmup} "
        f"warm-up round, then best and median of {args.repeats} rounds. \"Paired\" = median over rounds of the "
        f"contender's time over the floor's time in the same round; \"CPU time\" = process CPU seconds of the call."),
        "",
        (f"**Target: ours (early_stop=False) within {TARGET_RATIO:.2f}x of the floor: {state} ("
         + "; ".join(f"{k} {v:.3f}x" for k, v in measures.items()) + ").**"),
        "",
        f"## Linf, like for like (every sample runs every step), {args.threads} threads",
        "",
        _table([r for r in rows if r["norm"] == "linf" and r["like_for_like"]]),
        "",
        "## Ours with the default early_stop=True (NOT like for like), same rounds",
        "",
        ("Samples leave the working batch once fooled, so the time depends on how fast they fall. With random "
        f"weights and random labels {1 - clean_acc:.0%} of the samples are misclassified before the first step "
        "and leave at once; the second row uses the model's clean predictions as labels, so every sample "
        "starts correctly classified."),
        "",
        _table([r for r in rows if not r["like_for_like"]]),
        "",
        f"## L2 (eps = {EPS_L2}, step {alpha_l2:g}), ours against an L2 floor, {args.threads} threads",
        "",
        _table([r for r in rows if r["norm"] == "l2"]),
        "",
    ]
    if single:
        lines += [
            "## Cross-check at 1 thread (ours against the floor, Linf and L2)",
            "",
            ("One thread never waits for a second one that another process has taken off the core, so these "
            "ratios are the least disturbed by a busy machine."),
            "",
            _table(single, with_check=False),
            "",
        ]
    lines += [
        "## Contenders",
        "",
        *[f"- {r['contender']}: `{r['description']}`" for r in rows],
        "",
        ("Our attack does one forward pass more than the floor (after the last step, to keep the best "
        "iterate) plus per-step bookkeeping of the best iterate; the peers' own overheads (input checks, "
        "numpy conversion in ART, a final success check in Foolbox and ART) are part of their times."),
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.profile:
        print(profile_ours(model, x, y, "linf", EPS_LINF))
        print(profile_ours(model, x, y, "l2", EPS_L2))
    if not args.no_write:
        save_results(args.out, "pgd10", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
