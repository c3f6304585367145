"""Benchmark: our FMN (Linf, L2, L1) and DDN (L2) against Foolbox's, side by side, in one process.

Pairs, each run with the same number of steps and every other setting at its default:

* ``FMN(norm=p, steps=S)`` against Foolbox's ``LInfFMNAttack`` / ``L2FMNAttack`` / ``L1FMNAttack(steps=S)``;
* ``DDN(steps=S)`` against Foolbox's ``DDNAttack(steps=S)``.

torchattacks 3.5.1 has neither FMN nor DDN (its minimum-norm attacks are CW, DeepFool, EAD, FAB,
SparseFool, JSMA, OnePixel), so it has no row here; FAB is benchmarked elsewhere.

Models:

* ``digits``: ``common.train_digits_cnn()`` (seeded) on the scikit-learn digits (1x8x8), every test
  image of ``common.digits_split()`` it classifies correctly;
* ``preact-resnet18``: PreAct ResNet-18 (``robustness.architectures``) with fixed-seed random
  weights on CIFAR-shaped inputs (3x32x32) uniform in [0, 1], labels = the model's predictions
  (every sample starts correctly classified). A small batch and fewer steps: on two CPU cores a
  forward and backward pass of this network costs what 100 steps on the digits do.

Per attack: successes (the output differs from the input and the model, re-run here, misclassifies
it), the median norm over all inputs with failures counted as ``+inf`` (an attack cannot lower it
by giving up on hard inputs; it is the comparison the targets use), the median over the attack's
own successes, and the median over the inputs both attacks of the pair broke. Time: best wall and
process CPU time of ``--repeats`` round-robin rounds after ``--warmup`` untimed ones
(``common.best_of_interleaved``). Foolbox back-propagates with ``loss.backward()``, which also
fills the parameters' ``.grad`` (cleared after each of its calls, inside its timing); that is the
cost its users pay.

Targets (the issue): at least Foolbox's successes, a median norm at most 1.02 times Foolbox's (the
best, and only, peer with these attacks), and a time no larger than Foolbox's.

Usage (from the repository root)::

    python benchmarks/bench_min_norm.py                  # writes benchmarks/results/min_norm.{json,md}
    python benchmarks/bench_min_norm.py --models digits --no-write
"""

from __future__ import annotations

import os

# a shared machine: OpenMP threads that spin while waiting make timings vary tenfold (see bench_cw.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import logging
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    RESULTS_DIR,
    best_of_interleaved,
    command_line,
    digits_split,
    machine_info,
    markdown_table,
    now_utc,
    provenance_lines,
    save_results,
    train_digits_cnn,
)
from robustness.architectures import build_architecture
from robustness.attacks import DDN, FMN
from robustness.norms import norm_of

log = logging.getLogger("bench_min_norm")

TARGETS = {"success_ratio_min": 1.0, "median_ratio_max": 1.02, "time_ratio_max": 1.0}
#: (pair, norm, our attack's factory, Foolbox's class name)
PAIRS: tuple[tuple[str, str, Callable[[int], Any], str], ...] = (
    ("FMN linf", "linf", lambda s: FMN(norm="linf", steps=s), "LInfFMNAttack"),
    ("FMN l2", "l2", lambda s: FMN(norm="l2", steps=s), "L2FMNAttack"),
    ("FMN l1", "l1", lambda s: FMN(norm="l1", steps=s), "L1FMNAttack"),
    ("DDN l2", "l2", lambda s: DDN(steps=s), "DDNAttack"),
)
MODELS = ("digits", "preact-resnet18")


def load(name: str, batch: int | None) -> tuple[nn.Module, Tensor, Tensor]:
    """The model and the inputs to attack (all correctly classified)."""
    if name == "digits":
        model = train_digits_cnn(seed=0)
        _, _, x, y = digits_split()
        with torch.no_grad():
            keep = model(x).argmax(1) == y
        x, y = x[keep], y[keep]
    else:
        torch.manual_seed(0)  # the weights are fixed, whatever the global generator held
        model = build_architecture("preact-resnet18", num_classes=10).eval()
        x = torch.rand((batch or 8, 3, 32, 32), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = model(x).argmax(1)
    if batch is not None:
        x, y = x[:batch], y[:batch]
    return model, x.contiguous(), y.contiguous()


def norms_or_inf(model: nn.Module, x: Tensor, y: Tensor, adv: Tensor, norm: str) -> Tensor:
    """``(N,)``: the norm of each success (changed and misclassified, re-predicted here), ``inf`` elsewhere."""
    with torch.no_grad():
        success = (model(adv).argmax(1) != y) & (adv != x).flatten(1).any(dim=1)
    return torch.where(success, norm_of(adv - x, norm), torch.full((x.shape[0],), math.inf))


def _median(values: Tensor) -> float:
    return float(values.median()) if values.numel() else float("nan")


def _ratio(ours: float, theirs: float) -> float:
    """``ours / theirs`` for medians that may be ``inf`` (more than half failed): 1 when both are."""
    if math.isinf(ours) and math.isinf(theirs):
        return 1.0
    return ours / theirs if theirs else float("nan")


def bench_model(name: str, batch: int | None, steps: int, repeats: int, warmup: int) -> dict[str, Any]:
    import foolbox as fb

    model, x, y = load(name, batch)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=str(x.device))
    outputs: dict[str, Tensor] = {}
    fns: dict[str, Callable[[], None]] = {}
    for pair, _, ours_factory, fb_name in PAIRS:
        ours, theirs = ours_factory(steps), getattr(fb.attacks, fb_name)(steps=steps)

        def run_ours(attack: Any = ours, key: str = f"{pair} | ours") -> None:
            outputs[key] = attack(model, x, y)

        def run_foolbox(attack: Any = theirs, key: str = f"{pair} | foolbox") -> None:
            _, adv, _ = attack(fmodel, x, y, epsilons=None)
            model.zero_grad(set_to_none=True)
            outputs[key] = adv.detach()

        fns[f"{pair} | ours"], fns[f"{pair} | foolbox"] = run_ours, run_foolbox
    log.info("%s: %d inputs %s, %d steps, %d rounds", name, x.shape[0], tuple(x.shape[1:]), steps, repeats)
    timings = best_of_interleaved(fns, repeats=repeats, warmup=warmup)
    rows = []
    for pair, norm, ours_factory, fb_name in PAIRS:
        o = norms_or_inf(model, x, y, outputs[f"{pair} | ours"], norm)
        f = norms_or_inf(model, x, y, outputs[f"{pair} | foolbox"], norm)
        both = torch.isfinite(o) & torch.isfinite(f)
        t_o, t_f = timings[f"{pair} | ours"], timings[f"{pair} | foolbox"]
        row = {
            "pair": pair, "norm": norm, "images": int(x.shape[0]), "ours": ours_factory(steps).describe(),
            "foolbox": f"{fb_name}(steps={steps})",
            "successes": {"ours": int(torch.isfinite(o).sum()), "foolbox": int(torch.isfinite(f).sum())},
            "median_all": {"ours": _median(o), "foolbox": _median(f)},
            "median_own_successes": {"ours": _median(o[torch.isfinite(o)]),
                                     "foolbox": _median(f[torch.isfinite(f)])},
            "median_common_successes": {"ours": _median(o[both]), "foolbox": _median(f[both]),
                                        "count": int(both.sum())},
            "time": {"ours": t_o.to_dict(), "foolbox": t_f.to_dict()},
        }
        ratios = {
            "success": row["successes"]["ours"] / max(row["successes"]["foolbox"], 1),
            "median_all": _ratio(row["median_all"]["ours"], row["median_all"]["foolbox"]),
            "median_common": _ratio(row["median_common_successes"]["ours"], row["median_common_successes"]["foolbox"]),
            "time_wall": t_o.best / t_f.best,
            "time_cpu": t_o.cpu_best / t_f.cpu_best,
        }
        row["ratios_ours_over_foolbox"] = ratios
        row["targets_met"] = {
            "success": row["successes"]["ours"] >= row["successes"]["foolbox"],
            "median": ratios["median_all"] <= TARGETS["median_ratio_max"],
            "time": ratios["time_wall"] <= TARGETS["time_ratio_max"],
        }
        log.info("%s %s: %s", name, pair, {k: row[k] for k in ("successes", "median_all", "ratios_ours_over_foolbox")})
        rows.append(row)
    return {"images": int(x.shape[0]), "input_shape": list(x.shape[1:]), "steps": steps, "repeats": repeats,
            "warmup": warmup, "rows": rows}


def _fmt(v: float) -> str:
    return "inf" if v == math.inf else f"{v:.4f}"


def _markdown(result: dict[str, Any]) -> str:
    lines = ["# Minimum-norm attacks: FMN and DDN, ours vs Foolbox", "",
             *provenance_lines(result["machine"], result["command"], result["date"]), "", result["summary"], ""]
    for name, sec in result["models"].items():
        lines += [f"## {name}: {sec['images']} inputs of shape {'x'.join(map(str, sec['input_shape']))}, "
                  f"{sec['steps']} steps, best of {sec['repeats']} rounds after {sec['warmup']} warm-up", ""]
        body = []
        for r in sec["rows"]:
            ra, met = r["ratios_ours_over_foolbox"], r["targets_met"]
            for who in ("ours", "foolbox"):
                t = r["time"][who]
                body.append([
                    f"{r['pair']}, {who}", f"{r['successes'][who]}/{r['images']}", _fmt(r["median_all"][who]),
                    _fmt(r["median_own_successes"][who]), _fmt(r["median_common_successes"][who]),
                    f"{t['best_s']:.2f}", f"{t['cpu_best_s']:.2f}",
                    "" if who == "foolbox" else
                    f"success {'yes' if met['success'] else 'NO'}, median {ra['median_all']:.3f} "
                    f"({'yes' if met['median'] else 'NO'}), time {ra['time_wall']:.3f} "
                    f"({'yes' if met['time'] else 'NO'}; CPU {ra['time_cpu']:.3f})",
                ])
        lines += [markdown_table(["attack", "successes", "median (failures = inf)", "median (own successes)",
                                  "median (both broke)", "wall (s)", "CPU (s)", "ours / Foolbox: targets met"],
                                 body, align="lrrrrrrl"), ""]
    lines += ["Targets: successes >= Foolbox's; median (failures = inf) <= 1.02 x Foolbox's; wall time <= "
              "Foolbox's. torchattacks 3.5.1 has no FMN or DDN: no row.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=100, help="steps on the digits")
    parser.add_argument("--resnet-steps", type=int, default=50, help="steps on the PreAct ResNet-18")
    parser.add_argument("--resnet-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds on the digits")
    parser.add_argument("--resnet-repeats", type=int, default=1, help="timed rounds on the PreAct ResNet-18")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (digits; none on the ResNet)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: use {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    date, info = now_utc(), machine_info("cpu", peers=("foolbox", "torchattacks"))
    result: dict[str, Any] = {
        "benchmark": "min_norm", "command": command_line(), "date": date, "machine": info, "targets": TARGETS,
        "summary": ("Same model, inputs and steps for both attacks of a pair; every other setting at its default. "
                    "Successes: changed and misclassified (re-predicted here). Medians of the pair's norm "
                    "(Linf, L2 or L1). Digits: `common.train_digits_cnn()`, every correctly classified test "
                    "image. PreAct ResNet-18: fixed-seed random weights, uniform 3x32x32 inputs, labels = its "
                    "predictions. Wall and CPU time: best of the round-robin rounds."),
        "models": {},
    }
    for name in names:
        if name == "digits":
            sec = bench_model(name, None, args.steps, args.repeats, args.warmup)
        else:
            sec = bench_model(name, args.resnet_batch, args.resnet_steps, args.resnet_repeats, 0)
        result["models"][name] = sec
        if not args.no_write:  # after every model, so that a run stopped later keeps what it measured
            save_results(args.out, "min_norm", result, _markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
