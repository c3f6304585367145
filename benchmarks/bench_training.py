"""Adversarial training speed and robustness: our trainer against a standard epoch and against ART.

Setup: the shipped architecture (``SmallCNN`` width 16 inside ``NormalizedModel``) on the
scikit-learn digits (train split 1,347 images, test split 450), batches of 128, Linf budget
``eps`` (default 0.2, the shipped model's), the same initial weights for every contender. Every
contender runs in this one process, on the same thread count.

Part 1, cost of one epoch (timed round-robin: warm-up, then best and median of N), the same
pre-shuffled batches for everyone:

1. standard: a hand-written epoch (forward, cross-entropy, backward, SGD step): the baseline;
2. ours ``standard``: the same through ``AdversarialTrainer(method="standard").fit`` (the
   trainer's own overhead: input checks, statistics);
3. ours ``fgsm-rs`` (target: at most 2.2 x the standard epoch);
4. ours ``pgd`` with k steps (target: at most (k + 1) x 1.1 x the standard epoch);
5. a PGD-k epoch whose inner attack is :class:`robustness.attacks.PGD` (``early_stop=False``), to show
   why the trainer uses its lean loop.

Part 2, against ART 1.20 (``art.defences.trainer``), same model initialisation, data, budget,
batch size and epochs; robust accuracy by our runner (``robustness.evaluate``, PGD-20 with
random start, verified) on the whole digits test split, and wall time of the training:

Ours is fed by a shuffling ``DataLoader`` that slices whole batches from the tensors (ART
indexes its NumPy arrays the same way).

* ours ``pgd`` (PGD-k, step 2.5 eps / k) vs ``AdversarialTrainerMadryPGD`` (same k, step,
  one random init), both with SGD (lr 0.05, Nesterov momentum 0.9, weight decay 5e-4) at a
  constant learning rate (ART's trainer does not step a scheduler);
* ours ``fgsm-rs`` (alpha = 1.25 eps) with a one-cycle linear schedule peaking at 0.21 after 40%
  of the steps vs ``AdversarialTrainerFBFPyTorch`` (which hard-codes that schedule, and also
  clips the gradient norm to 0.5), same SGD.

Target: ours at least as robust (mean PGD-20 accuracy over the seeds) in at most half the wall time.

Run from the repository root::

    python benchmarks/bench_training.py              # writes benchmarks/results/training.{json,md}
    python benchmarks/bench_training.py --epochs 5 --no-write
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # ART's progress bars; tqdm reads this when it is imported

import argparse
import logging
import math
import sys
import time
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

from robustness.attacks import PGD
from benchmarks.common import (
    RESULTS_DIR,
    best_of_interleaved,
    command_line,
    machine_info,
    markdown_table,
    now_utc,
    provenance_lines,
    save_results,
)
from robustness.defenses.trainer import AdversarialTrainer
from robustness.architectures import SmallCNN
from robustness.datasets import load_dataset, to_tensors
from robustness.model import NormalizedModel
from robustness.runner import evaluate

log = logging.getLogger("bench_training")

FGSM_TARGET = 2.2
PGD_TARGET_FACTOR = 1.1
ART_TIME_TARGET = 0.5
BATCH = 128
LR = 0.05
FBF_PEAK_LR = 0.21


def make_model(seed: int, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Module:
    torch.manual_seed(seed)
    return NormalizedModel(SmallCNN(in_channels=1, num_classes=10, input_size=8, width=16), mean, std)


def sgd(model: nn.Module, lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def tensor_loader(x: Tensor, y: Tensor) -> torch.utils.data.DataLoader:
    """A shuffling DataLoader that slices whole batches out of the tensors (no per-example collation);
    its order comes from the global torch RNG."""
    data = torch.utils.data.TensorDataset(x, y)
    sampler = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(data), BATCH, drop_last=False)
    return torch.utils.data.DataLoader(data, batch_size=None, sampler=sampler)


def batches(x: Tensor, y: Tensor, seed: int) -> list[tuple[Tensor, Tensor]]:
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return [(x[perm[i:i + BATCH]], y[perm[i:i + BATCH]]) for i in range(0, len(y), BATCH)]


# --------------------------------------------------------------------------- part 1: one epoch


def epoch_contenders(x: Tensor, y: Tensor, mean: tuple[float, ...], std: tuple[float, ...], eps: float,
                     steps: int, seed: int) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    data = batches(x, y, seed)
    fns: dict[str, Callable[[], Any]] = {}
    desc: dict[str, str] = {}

    base = make_model(seed, mean, std)
    base_opt = sgd(base)

    def standard() -> None:
        base.train()
        for xb, yb in data:
            base_opt.zero_grad(set_to_none=True)
            F.cross_entropy(base(xb), yb).backward()
            base_opt.step()

    fns["standard (hand-written)"] = standard
    desc["standard (hand-written)"] = "forward, cross-entropy, backward, SGD step per batch"

    def ours(method: str) -> Callable[[], Any]:
        model = make_model(seed, mean, std)
        opt = sgd(model)
        trainer = AdversarialTrainer(method=method, eps=eps, steps=steps, seed=seed, guard=False)
        return lambda: trainer.fit(model, data, epochs=1, optimizer=opt, progress=False)

    for method in ("standard", "fgsm-rs", "pgd"):
        label = f"ours {method}" + (f" (PGD-{steps})" if method == "pgd" else "")
        fns[label] = ours(method)
        desc[label] = repr(AdversarialTrainer(method=method, eps=eps, steps=steps, seed=seed, guard=False))

    lib_model = make_model(seed, mean, std)
    lib_opt = sgd(lib_model)
    lib_attack = PGD(norm="linf", steps=steps, early_stop=False)
    gen = torch.Generator().manual_seed(seed)

    def pgd_with_attack_class() -> None:
        lib_model.train()
        for xb, yb in data:
            x_adv = lib_attack(lib_model, xb, yb, eps=eps, generator=gen)
            lib_opt.zero_grad(set_to_none=True)
            F.cross_entropy(lib_model(x_adv), yb).backward()
            lib_opt.step()

    label = f"PGD-{steps} epoch with robustness.attacks.PGD inside"
    fns[label] = pgd_with_attack_class
    desc[label] = f"hand-written loop calling {lib_attack.describe()} per batch, then the training step"
    return fns, desc


# --------------------------------------------------------------------------- part 2: against ART


def art_classifier(model: nn.Module, lr: float) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), optimizer=sgd(model, lr),
                             input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> dict[str, float]:
    report = evaluate(model.eval(), (x, y), attacks=[PGD(norm="linf", steps=20)], epsilons=[0.0, eps],
                      norm="linf", batch_size=512, seed=seed, progress=False)
    return {"clean": report.clean_accuracy, "pgd20": report.robust_accuracy[eps]}


def versus_art(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, mean: tuple[float, ...],
               std: tuple[float, ...], eps: float, steps: int, epochs: int, seeds: list[int]) -> list[dict[str, Any]]:
    """Every contender once per seed (round-robin over contenders within a seed); one row per run."""
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        rows += _versus_art_once(x, y, x_test, y_test, mean, std, eps, steps, epochs, seed)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and per-seed values) of time, clean and PGD-20 accuracy per contender."""
    out = []
    for name in dict.fromkeys(r["contender"] for r in rows):
        runs = [r for r in rows if r["contender"] == name]
        out.append({"family": runs[0]["family"], "contender": name, "settings": runs[0]["settings"],
                    "seeds": [r["seed"] for r in runs],
                    "seconds": float(np.mean([r["seconds"] for r in runs])),
                    "clean": float(np.mean([r["clean"] for r in runs])),
                    "pgd20": float(np.mean([r["pgd20"] for r in runs])),
                    "pgd20_per_seed": [r["pgd20"] for r in runs]})
    return out


def _versus_art_once(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, mean: tuple[float, ...],
                     std: tuple[float, ...], eps: float, steps: int, epochs: int, seed: int) -> list[dict[str, Any]]:
    from art.defences.trainer import (
        AdversarialTrainerFBFPyTorch,
        AdversarialTrainerMadryPGD,
    )

    alpha = 2.5 / steps * eps
    y_onehot = np.eye(10, dtype=np.float32)[y.numpy()]
    rows: list[dict[str, Any]] = []

    def run(name: str, family: str, settings: str, train: Callable[[nn.Module], None]) -> None:
        model = make_model(seed, mean, std)
        torch.manual_seed(seed)
        np.random.seed(seed)
        start = time.perf_counter()
        train(model)
        seconds = time.perf_counter() - start
        acc = robust_accuracy(model, x_test, y_test, eps, seed)
        rows.append({"family": family, "contender": name, "settings": settings, "seed": seed, "seconds": seconds,
                     **acc})
        log.info("seed %d, %s: %.1f s, clean %.3f, PGD-20 %.3f", seed, name, seconds, acc["clean"], acc["pgd20"])

    def ours_pgd(model: nn.Module) -> None:
        loader = tensor_loader(x, y)
        AdversarialTrainer(method="pgd", eps=eps, steps=steps, seed=seed).fit(
            model, loader, epochs=epochs, optimizer=sgd(model), progress=False)

    def art_madry(model: nn.Module) -> None:
        trainer = AdversarialTrainerMadryPGD(art_classifier(model, LR), nb_epochs=epochs, batch_size=BATCH, eps=eps,
                                             eps_step=alpha, max_iter=steps, num_random_init=1)
        trainer.fit(x.numpy(), y_onehot)

    def ours_fgsm(model: nn.Module) -> None:
        loader = tensor_loader(x, y)
        opt = sgd(model, FBF_PEAK_LR)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=FBF_PEAK_LR, total_steps=epochs * len(loader),
                                                    pct_start=0.4, anneal_strategy="linear", cycle_momentum=False,
                                                    div_factor=1e4, final_div_factor=1e4)
        AdversarialTrainer(method="fgsm-rs", eps=eps, seed=seed).fit(
            model, loader, epochs=epochs, optimizer=opt, scheduler=sched, scheduler_interval="batch",
            progress=False)

    def art_fbf(model: nn.Module) -> None:
        trainer = AdversarialTrainerFBFPyTorch(art_classifier(model, FBF_PEAK_LR), eps=eps)
        trainer.fit(x.numpy(), y_onehot, batch_size=BATCH, nb_epochs=epochs)

    common = f"eps={eps}, batch {BATCH}, {epochs} epochs, SGD(momentum 0.9, nesterov, wd 5e-4)"
    run("ours pgd", "PGD", f"PGD-{steps}, step {alpha:.4g}, constant lr {LR}, {common}", ours_pgd)
    run("ART AdversarialTrainerMadryPGD", "PGD",
        f"max_iter={steps}, eps_step={alpha:.4g}, num_random_init=1, constant lr {LR}, {common}", art_madry)
    run("ours fgsm-rs", "FGSM-RS", f"alpha=1.25 eps, one-cycle linear to {FBF_PEAK_LR} at 40%, guard on, {common}",
        ours_fgsm)
    run("ART AdversarialTrainerFBFPyTorch", "FGSM-RS",
        f"its fixed schedule (0 -> {FBF_PEAK_LR} at 2/5 -> 0), grad-norm clip 0.5, {common}", art_fbf)
    return rows


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=7, help="k of PGD-k")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the ART comparison")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: fastest for this small CNN, and steady on a shared machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and batches of part 1")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds of part 2 (results are averaged over them)")
    parser.add_argument("--no-art", action="store_true", help="skip part 2")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("defenses", "art"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(args.threads)

    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = to_tensors(train.dataset)
    x_test, y_test = to_tensors(test.dataset)
    info = machine_info("cpu", peers=("adversarial-robustness-toolbox",))
    date = now_utc()

    fns, desc = epoch_contenders(x, y, train.mean, train.std, args.eps, args.steps, args.seed)
    timings = best_of_interleaved(fns, repeats=args.repeats, warmup=args.warmup)
    base = timings["standard (hand-written)"].best
    k = args.steps
    targets = {"ours fgsm-rs": FGSM_TARGET, f"ours pgd (PGD-{k})": (k + 1) * PGD_TARGET_FACTOR}
    epoch_rows = []
    for name, t in timings.items():
        ratio = t.best / base
        target = targets.get(name)
        epoch_rows.append({"contender": name, "best_s": t.best, "median_s": t.median, "ratio_to_standard": ratio,
                           "target": target, "met": None if target is None else ratio <= target,
                           "description": desc[name], "times": list(t.times)})
        log.info("%-40s best %.3f s  x%.2f", name, t.best, ratio)

    seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    runs = [] if args.no_art else versus_art(x, y, x_test, y_test, train.mean, train.std, args.eps, k, args.epochs,
                                             seeds)
    art_rows = summarize(runs)
    verdicts = []
    for family in ("PGD", "FGSM-RS"):
        pair = [r for r in art_rows if r["family"] == family]
        if len(pair) == 2:
            ours, art = (pair[0], pair[1]) if pair[0]["contender"].startswith("ours") else (pair[1], pair[0])
            diffs = np.subtract(ours["pgd20_per_seed"], art["pgd20_per_seed"])
            sem = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
            verdicts.append({"family": family, "time_ratio": ours["seconds"] / art["seconds"],
                             "robust_difference": ours["pgd20"] - art["pgd20"], "robust_difference_sem": sem,
                             "met": ours["seconds"] <= ART_TIME_TARGET * art["seconds"] and ours["pgd20"] >= art["pgd20"]})
    info["load_average_1m_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "adversarial training: epoch cost and ART comparison",
        "date": date, "command": command_line(), "machine": info,
        "setup": {"model": "NormalizedModel(SmallCNN(width=16))", "data": "digits train 1347 / test 450",
                  "batch_size": BATCH, "eps": args.eps, "norm": "linf", "pgd_steps": k, "epochs_vs_art": args.epochs,
                  "seed": args.seed, "seeds_vs_art": seeds, "repeats": args.repeats, "warmup": args.warmup},
        "epoch": epoch_rows, "versus_art": art_rows, "versus_art_runs": runs, "verdicts": verdicts,
    }
    md = ["# Adversarial training: cost per epoch, and against ART", ""]
    md += provenance_lines(info, command_line(), date)
    setup = (f"- setup: SmallCNN width 16 (NormalizedModel), digits (1347 train / 450 test), batch {BATCH}, Linf "
             f"eps={args.eps}, PGD-{k}, seed {args.seed}; load average {info['load_average_1m_at_start']} at start, "
             f"{info['load_average_1m_at_end']} at end")
    md += [setup, "", f"## One epoch (same batches, best of {args.repeats} after {args.warmup} warm-up)", ""]
    md.append(markdown_table(
        ["contender", "best s", "median s", "x standard", "target", "met"],
        [[r["contender"], f"{r['best_s']:.3f}", f"{r['median_s']:.3f}", f"{r['ratio_to_standard']:.2f}",
          "-" if r["target"] is None else f"<= {r['target']:.2f}",
          "-" if r["met"] is None else ("yes" if r["met"] else "no")] for r in epoch_rows]))
    if art_rows:
        title = (f"## Against ART ({args.epochs} epochs; means over seeds {args.seeds}; accuracy on the 450 test "
                 f"images, PGD-20 at eps={args.eps} by robustness.evaluate)")
        md += ["", title, ""]
        md.append(markdown_table(
            ["contender", "train s", "clean", "PGD-20", "PGD-20 per seed", "settings"],
            [[r["contender"], f"{r['seconds']:.1f}", f"{100 * r['clean']:.1f}%", f"{100 * r['pgd20']:.1f}%",
              ", ".join(f"{100 * v:.1f}" for v in r["pgd20_per_seed"]), r["settings"]] for r in art_rows],
            align="lrrrrl"))
        md += ["", "Target: ours at least as robust in at most half ART's wall time.", ""]
        md.append(markdown_table(
            ["family", "ours / ART time", "PGD-20 ours - ART (mean, +- s.e. over seeds)", "met"],
            [[v["family"], f"{v['time_ratio']:.2f}",
              f"{100 * v['robust_difference']:+.1f} +- {100 * v['robust_difference_sem']:.1f} points",
              "yes" if v["met"] else "no"] for v in verdicts]))
    text = "\n".join(md) + "\n"
    print(text)
    if not args.no_write:
        save_results(args.out, "training", result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
