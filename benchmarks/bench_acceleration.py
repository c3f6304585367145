"""bf16 autocast, channels_last and torch.compile: what each saves in ``robustness.evaluate``, and
what bf16 does to attack strength.

Speed. Each option is timed against eager float32 in one process, on the same model, inputs,
seeds, device and thread count (round-robin after warm-up; best and median of N; ratios to eager
fp32 of the same run). The first call of each option is timed apart: it pays torch.compile's
compilation (on a fresh inductor cache unless ``--warm-compile-cache``) and oneDNN/cuDNN set-up.
Setups:

1. PreAct ResNet-18 on CIFAR-shaped inputs (3x32x32 uniform in [0, 1]), fixed-seed random
   weights, labels = the model's clean predictions (so every sample is attacked); a small batch
   on the CPU, a large one on a GPU. PGD-10 with ``early_stop=False`` (the same work for every
   option), Linf 8/255; on a GPU also the default Linf attacks (FGSM, PGD, APGD-CE) over the
   CLI's CIFAR budgets.
2. The shipped adversarially trained digits model (``robustness/weights/digits_cnn_at.pt``) on
   the digits test split: PGD-10 (fixed work) at Linf 0.1 and 0.2, and the default Linf attacks
   over the CLI's digits budgets.

Strength. On the same trained digits model and the whole test split (450 images), with the same
seeds: robust accuracy with and without ``amp="bf16"`` (PGD-10 and the default attacks, each
budget), the per-sample disagreements, and a third column that splits the effect: PGD-10 whose
gradients are computed in bf16 while the runner verifies in float32.

The device is chosen automatically (CUDA when present, else the CPU) and recorded. Run from the
repository root::

    python benchmarks/bench_acceleration.py            # writes benchmarks/results/acceleration.{json,md}
    python benchmarks/bench_acceleration.py --quick    # a smoke run: fewer images, rounds and seeds
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
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
    best_of_interleaved,
    cifar_batch,
    command_line,
    machine_info,
    markdown_table,
    now_utc,
    paired_ratio,
    provenance_lines,
    save_results,
)
from robustness.acceleration import accelerated
from robustness.architectures import build_architecture
from robustness.datasets import load_dataset, to_tensors
from robustness.loading import load_model

AT_MODEL = Path(robustness.__file__).resolve().parent / "weights" / "digits_cnn_at.pt"
DEFAULT_ATTACKS = ["fgsm", "pgd", "apgd-ce"]  # the CLI's Linf default
DIGITS_BUDGETS = [0.05, 0.1, 0.15, 0.2, 0.3]  # the CLI's digits Linf default
CIFAR_BUDGETS = [2 / 255, 4 / 255, 8 / 255, 16 / 255]
OPTIONS: dict[str, dict[str, Any]] = {
    "eager fp32": {},
    "bf16": {"amp": "bf16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "bf16 + channels_last": {"amp": "bf16", "channels_last": True},
    "bf16 + channels_last + compile": {"amp": "bf16", "channels_last": True, "compile": True},
}
QUICK_OPTIONS = ("eager fp32", "bf16", "channels_last", "compile")

log = logging.getLogger("bench_acceleration")


@dataclass(frozen=True, kw_only=True)
class BF16GradientPGD(PGD):
    """PGD whose forward and backward passes run under bf16 autocast; the runner still predicts
    and verifies with the float32 model. Separates the effect of bf16 on the attack's gradients
    from its effect on the predictions."""

    name: ClassVar[str] = "pgd (bf16 gradients)"

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:  # type: ignore[override]
        with accelerated(model, amp="bf16", channels_last=False, compile=False, device=x.device) as fast:
            return super()._run(fast, x, y, **kwargs)


def _graphs() -> int:
    """Graphs compiled so far in this process (torch's own counter; 0 where it is unavailable)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - a private counter: informational only
        return 0


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, attacks: list[Any], budgets: list[float], device: torch.device,
              seed: int, options: dict[str, Any]) -> robustness.Report:
    return robustness.evaluate(model, (x, y), attacks=attacks, epsilons=[0, *budgets], batch_size=x.shape[0],
                               device=device, seed=seed, progress=False, checks=False, **options)


def time_options(name: str, model: nn.Module, x: Tensor, y: Tensor, attacks: list[Any], budgets: list[float],
                 device: torch.device, options: list[str], repeats: int, warmup: int) -> dict[str, Any]:
    """First-call and steady-state times of ``evaluate`` under each option, ratios to eager fp32."""
    first: dict[str, dict[str, Any]] = {}
    reports: dict[str, robustness.Report] = {}
    _evaluate(model, x, y, attacks, budgets, device, 0, {})  # process-wide set-up, billed to no option
    for opt in options:  # first calls, one by one: compilation and per-option set-up land here
        graphs = _graphs()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            reports[opt] = _evaluate(model, x, y, attacks, budgets, device, 0, OPTIONS[opt])
            first[opt] = {"seconds": time.perf_counter() - t0, "graphs_compiled": _graphs() - graphs,
                          "warnings": [str(w.message) for w in caught if "uncompiled" in str(w.message)]}
    fns = {opt: (lambda o=opt: _evaluate(model, x, y, attacks, budgets, device, 0, OPTIONS[o])) for opt in options}
    timings = best_of_interleaved(fns, repeats=repeats, warmup=warmup)
    ref = timings["eager fp32"]
    rows = []
    for opt in options:
        t, r = timings[opt], reports[opt]
        rows.append({
            "option": opt, "settings": OPTIONS[opt], "first_call_s": first[opt]["seconds"],
            "graphs_compiled": first[opt]["graphs_compiled"], "fallback_warnings": first[opt]["warnings"],
            "best_s": t.best, "median_s": t.median, "ratio_best": t.best / ref.best,
            "ratio_paired_median": paired_ratio(t, ref), "cpu_ratio_paired_median": paired_ratio(t, ref, cpu=True),
            "gradient_samples": sum(c["gradient_samples"] for c in r.model_calls.values()),
            "robust_accuracy": {str(k): v for k, v in r.robust_accuracy.items()}, "timing": t.to_dict(),
        })
    return {"setup": name, "n": int(x.shape[0]), "attacks": [getattr(a, "label", a) for a in attacks],
            "budgets": budgets, "threads": torch.get_num_threads(), "rows": rows}


def strength(model: nn.Module, x: Tensor, y: Tensor, device: torch.device, seeds: list[int]) -> dict[str, Any]:
    """Robust accuracy with and without bf16, same seeds, and PGD-10 with bf16 gradients only."""
    out: dict[str, Any] = {"budgets": DIGITS_BUDGETS, "seeds": seeds, "n": int(x.shape[0]), "runs": []}
    for label, attacks in (("pgd-10", [PGD(steps=10)]), ("default (fgsm, pgd, apgd-ce)", DEFAULT_ATTACKS)):
        for seed in seeds:
            fp32 = _evaluate(model, x, y, attacks, DIGITS_BUDGETS, device, seed, {})
            bf16 = _evaluate(model, x, y, attacks, DIGITS_BUDGETS, device, seed, {"amp": "bf16"})
            run = {"attacks": label, "seed": seed, "clean": {"fp32": fp32.clean_accuracy, "bf16": bf16.clean_accuracy},
                   "fp32": {str(e): fp32.robust_accuracy[e] for e in DIGITS_BUDGETS},
                   "bf16": {str(e): bf16.robust_accuracy[e] for e in DIGITS_BUDGETS},
                   "disagreements": _disagreements(fp32, bf16)}
            if label == "pgd-10":
                mixed = _evaluate(model, x, y, [BF16GradientPGD(steps=10)], DIGITS_BUDGETS, device, seed, {})
                run["bf16_gradients_fp32_verify"] = {str(e): mixed.robust_accuracy[e] for e in DIGITS_BUDGETS}
            out["runs"].append(run)
    return out


def _disagreements(a: robustness.Report, b: robustness.Report) -> dict[str, int]:
    """Per budget, the samples robust in one report and broken (or misclassified) in the other."""
    wa, wb = a.per_sample["broken_at:worst"], b.per_sample["broken_at:worst"]
    ca = [p == t for p, t in zip(a.per_sample["clean_prediction"], a.per_sample["label"])]
    cb = [p == t for p, t in zip(b.per_sample["clean_prediction"], b.per_sample["label"])]
    return {str(e): sum((ok_a and ia > i) != (ok_b and ib > i) for ia, ib, ok_a, ok_b in zip(wa, wb, ca, cb))
            for i, e in enumerate(DIGITS_BUDGETS)}


# --------------------------------------------------------------------------- report


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _speed_table(block: dict[str, Any]) -> str:
    header = ["option", "first call (s)", "graphs compiled", "best (s)", "median (s)", "best / eager fp32",
              "paired median / eager fp32", "CPU time / eager fp32", "gradient passes (samples)"]
    rows = [[r["option"] + (" (fell back to eager)" if r["fallback_warnings"] else ""), f"{r['first_call_s']:.2f}",
             r["graphs_compiled"], f"{r['best_s']:.3f}", f"{r['median_s']:.3f}", f"{r['ratio_best']:.2f}x",
             f"{r['ratio_paired_median']:.2f}x", f"{r['cpu_ratio_paired_median']:.2f}x", r["gradient_samples"]]
            for r in block["rows"]]
    return markdown_table(header, rows)


def _strength_tables(data: dict[str, Any]) -> list[str]:
    lines = []
    n = data["n"]
    for label in dict.fromkeys(r["attacks"] for r in data["runs"]):
        runs = [r for r in data["runs"] if r["attacks"] == label]
        mixed = "bf16_gradients_fp32_verify" in runs[0]
        header = ["budget", "fp32", "bf16", "bf16 - fp32 (samples, mean)", "max |bf16 - fp32| (samples)",
                  "disagreeing samples (mean)"] + (["bf16 gradients, fp32 verification"] if mixed else [])
        body = []
        for e in map(str, data["budgets"]):
            f32, b16 = [r["fp32"][e] for r in runs], [r["bf16"][e] for r in runs]
            diffs = [round((b - f) * n) for b, f in zip(b16, f32)]
            row = [e, f"{_mean(f32):.2%}", f"{_mean(b16):.2%}", f"{_mean(diffs):+.1f}", max(abs(d) for d in diffs),
                   f"{_mean([r['disagreements'][e] for r in runs]):.1f}"]
            if mixed:
                row.append(f"{_mean([r['bf16_gradients_fp32_verify'][e] for r in runs]):.2%}")
            body.append(row)
        lines += [f"### {label}, mean over {len(runs)} seed(s)", "", markdown_table(header, body), ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer images, rounds, seeds and options")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds after the first calls")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--no-single-thread", action="store_true",
                        help="skip the 1-thread cross-check of the PGD-10 timings on the CPU (skipped with --quick)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds of the strength comparison (default 5; 1 quick)")
    parser.add_argument("--warm-compile-cache", action="store_true",
                        help="use inductor's usual on-disk cache instead of a fresh one (first calls compile less)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true", help="print only; leave the result files alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else torch.device(args.device)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 5)
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    options = list(QUICK_OPTIONS if args.quick else OPTIONS)
    cache = None
    if not args.warm_compile_cache:
        cache = tempfile.mkdtemp(prefix="bench-acceleration-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read by inductor at its first compilation
        os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    # every option compiles the same model classes; torch's default of 8 variants per code object
    # would leave the later options running eager: raised for this benchmark process only
    torch._dynamo.config.recompile_limit = 64
    date = now_utc()
    info = machine_info(device)
    on_gpu = device.type == "cuda"

    loaded = load_model(str(AT_MODEL))
    digits_model = loaded.model.eval().to(device)  # on the device once: no copy inside the timed calls
    x_d, y_d = to_tensors(load_dataset("digits", split="test").dataset)
    torch.manual_seed(0)  # fixed random weights for the ResNet (a benchmark script may seed the global RNG)
    resnet = build_architecture("preact-resnet18", num_classes=10).eval()
    n_resnet = (128 if args.quick else 512) if on_gpu else (8 if args.quick else 32)
    x_r, _ = cifar_batch(n_resnet, seed=0)
    resnet.to(device)
    with torch.no_grad():
        y_r = resnet(x_r.to(device)).argmax(1).cpu()
    n_digits = 128 if args.quick else len(y_d)

    speed = []
    fixed = PGD(steps=10, early_stop=False)
    plan = [("preact-resnet18, PGD-10 (fixed work)", resnet, x_r, y_r, [fixed], [8 / 255])]
    if on_gpu:
        plan.append(("preact-resnet18, default attacks", resnet, x_r, y_r, DEFAULT_ATTACKS, CIFAR_BUDGETS))
    plan += [("digits AT, PGD-10 (fixed work)", digits_model, x_d[:n_digits], y_d[:n_digits], [fixed], [0.1, 0.2]),
             ("digits AT, default attacks", digits_model, x_d[:n_digits], y_d[:n_digits], DEFAULT_ATTACKS,
              DIGITS_BUDGETS)]
    for name, model, x, y, attacks, budgets in plan:
        log.info("timing %s (%d examples) on %s", name, x.shape[0], device)
        speed.append(time_options(name, model, x, y, attacks, budgets, device, options, repeats, args.warmup))
    if device.type == "cpu" and args.threads != 1 and not (args.quick or args.no_single_thread):
        # one thread never waits for a second one that another process took off the core
        torch.set_num_threads(1)
        for name, model, x, y, attacks, budgets in plan:
            if "PGD-10" in name:
                log.info("timing %s at 1 thread", name)
                speed.append(time_options(f"{name}, 1 thread", model, x, y, attacks, budgets, device, options,
                                          repeats, args.warmup))
        torch.set_num_threads(args.threads)
    log.info("strength: bf16 against fp32 on the trained digits model, %d seed(s)", len(seeds))
    effect = strength(digits_model, x_d, y_d, device, seeds)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)

    command = command_line()
    result = {
        "benchmark": "acceleration", "command": command, "date": date, "quick": args.quick,
        "machine": {**info, "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "setup": {
            "device": str(device), "threads": args.threads, "repeats": repeats, "warmup": args.warmup,
            "compile_cache": "warm (inductor's usual cache)" if args.warm_compile_cache else "fresh per run",
            "recompile_limit": 64, "checks": False, "digits_model": str(AT_MODEL.name),
            "resnet": f"PreActResNet18 random weights (torch.manual_seed(0)), {n_resnet}x3x32x32 uniform, "
                      "labels = clean predictions",
        },
        "speed": speed, "strength": effect,
    }
    lines = [
        "# bf16 autocast, channels_last and torch.compile in `robustness.evaluate`" + (" (QUICK RUN)" if args.quick
                                                                                        else ""),
        "",
        *provenance_lines(info, command, date),
        "",
        (f"Each option against eager float32 in this one process: first call timed alone (it pays compilation "
         f"on a {'warm' if args.warm_compile_cache else 'fresh'} inductor cache, and library set-up), then "
         f"{args.warmup} warm-up and {repeats} timed round(s), round-robin. Sanity checks off "
         "(`checks=False`: they run the plain model). \"Gradient passes\" = samples through a forward+backward "
         "pass, summed over attacks (PGD with early_stop=False does the same work under every option)."),
        "",
    ]
    for block in speed:
        budgets = ", ".join(f"{e:.4g}" for e in block["budgets"])
        lines += [f"## {block['setup']}: {block['n']} examples, budgets {budgets}, {block['threads']} thread(s)",
                  "", _speed_table(block), ""]
    lines += [
        f"## Attack strength with bf16: the trained digits model ({AT_MODEL.name}), {effect['n']} test images",
        "",
        ("Robust accuracy with `amp=\"bf16\"` (attack and verification in bf16) against float32, same seeds. "
         "\"Disagreeing samples\": robust under one and not the other. Last column: PGD-10 with bf16 "
         "gradients, verified in float32 (the attack's loss of strength alone)."),
        "",
        *_strength_tables(effect),
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_write:
        save_results(args.out, "acceleration", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
