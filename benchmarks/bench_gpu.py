"""GPU throughput: PGD-10 and the ``standard`` preset on a CIFAR-shaped PreAct ResNet-18 batch,
against the hand-written forward+backward floor, torchattacks, Foolbox and ART on the same GPU.

Setup: PreAct ResNet-18 (``robustness.architectures``, 10 classes) with fixed-seed random weights
in eval mode; a batch of ``--batch`` inputs 3x32x32 uniform in [0, 1], labels = the model's clean
predictions (every sample starts correctly classified); Linf eps = 8/255. Every contender runs
in this one process on the same model, inputs and device, timed round-robin (CUDA synchronised
before and after each call): warm-up, then best and median of N. Ratios are to the floor of the
same run.

Sections (``--sections``, all by default):

* ``pgd10``: the contenders of ``bench_pgd.py`` (floor, ours with ``early_stop=False``,
  torchattacks, Foolbox, ART), plus ours with its default early stop (reported apart).
* ``apgd``: APGD-CE (100 steps) and APGD-T (9 targets x 100 steps), ours with
  ``early_stop=False`` against a floor with the same forward+backward passes (100, resp. 900,
  hand-written sign steps) and torchattacks' ``APGD``/``APGDT`` (ART's APGD-CE too; ART has no
  per-target loop, see ``bench_apgd.py``). APGD-T attacks each next target only on the samples
  not fooled yet, so it is shown against its floor but not counted as like for like.
* ``square``: Square (``--square-queries``) ours against torchattacks and ART; every one drops
  fooled samples, so the floor (the same number of forward passes on the whole batch) bounds
  them from above and is reported, not targeted.
* ``standard``: ``robustness.evaluate(attacks="standard")`` end to end, with its early stop, and
  the forward/backward passes it made, as samples, next to what the same passes cost by hand
  (``--quick`` runs the ``smoke`` preset instead).

Target (issue 5): ours within 1.10x of the floor (PGD-10, APGD, like for like).

Run on a CUDA machine from the repository root::

    python benchmarks/bench_gpu.py                   # writes benchmarks/results/gpu.{json,md}
    python benchmarks/bench_gpu.py --sections pgd10,apgd --out /tmp/gpu   # a part, elsewhere
    python benchmarks/bench_gpu.py --quick --device cpu --out /tmp/gpu     # smoke run of this script
"""

from __future__ import annotations

import argparse
import logging
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

import robustness
from robustness.attacks import APGD, APGDT, PGD, Square
from benchmarks.bench_pgd import build_contenders, floor_pgd_linf
from benchmarks.common import (
    RESULTS_DIR,
    Timing,
    best_of_interleaved,
    command_line,
    machine_info,
    markdown_table,
    now_utc,
    paired_ratio,
    provenance_lines,
    save_results,
)
from robustness.architectures import build_architecture

log = logging.getLogger("bench_gpu")
EPS = 8 / 255
TARGET_RATIO = 1.10
SECTIONS = ("pgd10", "apgd", "square", "standard")


class PassCounter:
    """Counts the samples that go through the model's forward pass, with and without autograd."""

    def __init__(self, model: nn.Module) -> None:
        self.grad_samples = self.eval_samples = 0
        self._hook = model.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if torch.is_grad_enabled() and inputs[0].requires_grad:
            self.grad_samples += inputs[0].shape[0]
        else:
            self.eval_samples += inputs[0].shape[0]

    def close(self) -> None:
        self._hook.remove()


def _rows(timings: dict[str, Timing], floor: str | None, like: set[str]) -> list[dict[str, Any]]:
    ref = timings[floor] if floor else None
    return [{
        "contender": name, "like_for_like": name in like, "best_s": t.best, "median_s": t.median,
        "ratio_to_floor_best": t.best / ref.best if ref else None,
        "ratio_to_floor_paired_median": paired_ratio(t, ref) if ref else None,
        "timing": t.to_dict(),
    } for name, t in timings.items()]


def section_pgd10(model: nn.Module, x: Tensor, y: Tensor, repeats: int, warmup: int) -> dict[str, Any]:
    fns, desc = build_contenders(model, x, y)
    default = PGD(norm="linf", steps=10)
    fns["ours, default early_stop=True"] = lambda: default(model, x, y, eps=EPS)
    desc["ours, default early_stop=True"] = default.describe() + " (not like for like: fooled samples leave)"
    timings = best_of_interleaved(fns, repeats=repeats, warmup=warmup)
    like = {n for n in fns if n != "ours, default early_stop=True"}
    return {"rows": _rows(timings, "floor", like), "descriptions": desc, "ours": "ours (early_stop=False)"}


def section_apgd(model: nn.Module, x: Tensor, y: Tensor, repeats: int, warmup: int, steps: int, targets: int,
                 with_art: bool) -> dict[str, Any]:
    import torchattacks

    gen = lambda: torch.Generator(device=x.device).manual_seed(0)  # noqa: E731
    alpha = 0.25 * EPS
    ce, tgt = APGD(steps=steps, early_stop=False), APGDT(steps=steps, target_classes=targets, early_stop=False)
    ta_ce = torchattacks.APGD(model, norm="Linf", eps=EPS, steps=steps, n_restarts=1, loss="ce")
    ta_t = torchattacks.APGDT(model, norm="Linf", eps=EPS, steps=steps, n_restarts=1, n_classes=10)
    ta_t.n_target_classes = targets  # torchattacks attacks classes - 1 targets; --quick asks for fewer
    fns: dict[str, Callable[[], Any]] = {
        "floor, APGD-CE passes": lambda: floor_pgd_linf(model, x, y, EPS, alpha, steps, gen()),
        "ours APGD-CE (early_stop=False)": lambda: ce(model, x, y, eps=EPS, generator=gen()),
        "torchattacks APGD (ce)": lambda: ta_ce(x, y),
        "floor, APGD-T passes": lambda: floor_pgd_linf(model, x, y, EPS, alpha, steps * targets, gen()),
        "ours APGD-T (early_stop=False)": lambda: tgt(model, x, y, eps=EPS, generator=gen()),
        "torchattacks APGDT": lambda: ta_t(x, y),
    }
    desc = {
        "floor, APGD-CE passes": f"hand-written: random start + {steps} x (forward, input gradient, sign step, clamp)",
        "ours APGD-CE (early_stop=False)": ce.describe(),
        "torchattacks APGD (ce)": f"torchattacks.APGD(model, norm='Linf', eps=8/255, steps={steps}, n_restarts=1, loss='ce')",
        "floor, APGD-T passes": f"hand-written: random start + {steps * targets} x (forward, input gradient, sign "
                                f"step, clamp): the passes of {targets} targets x {steps} steps",
        "ours APGD-T (early_stop=False)": tgt.describe(),
        "torchattacks APGDT": f"torchattacks.APGDT(model, norm='Linf', eps=8/255, steps={steps}, n_restarts=1, "
                              f"n_classes=10), n_target_classes={targets}",
    }
    if with_art:
        from art.attacks.evasion import AutoProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=10, clip_values=(0.0, 1.0),
                                device_type="gpu" if x.is_cuda else "cpu")
        art = AutoProjectedGradientDescent(clf, norm=np.inf, eps=EPS, eps_step=2 * EPS, max_iter=steps,
                                           nb_random_init=1, batch_size=x.shape[0], loss_type="cross_entropy",
                                           verbose=False)
        x_np, y_np = x.cpu().numpy(), y.cpu().numpy()
        fns["ART AutoProjectedGradientDescent (ce)"] = lambda: art.generate(x=x_np, y=y_np)
        desc["ART AutoProjectedGradientDescent (ce)"] = (
            f"AutoProjectedGradientDescent(PyTorchClassifier(..., device_type='{'gpu' if x.is_cuda else 'cpu'}'), norm=np.inf, "
            f"eps=8/255, eps_step=16/255, max_iter={steps}, nb_random_init=1, loss_type='cross_entropy'), numpy inputs")
    timings = best_of_interleaved(fns, repeats=repeats, warmup=warmup)
    ce_names = [n for n in timings if "APGD-T" not in n and "APGDT" not in n]
    t_names = [n for n in timings if n not in ce_names]
    # APGD-T attacks each next target only on the samples not fooled yet (ours and torchattacks
    # alike), so it makes fewer passes than its floor: shown, not counted as like for like
    rows = (_rows({n: timings[n] for n in ce_names}, "floor, APGD-CE passes", set(ce_names))
            + _rows({n: timings[n] for n in t_names}, "floor, APGD-T passes", {"floor, APGD-T passes"}))
    return {"rows": rows, "descriptions": desc, "ours": ["ours APGD-CE (early_stop=False)", "ours APGD-T (early_stop=False)"]}


def section_square(model: nn.Module, x: Tensor, y: Tensor, repeats: int, warmup: int, queries: int) -> dict[str, Any]:
    import torchattacks
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier

    ours = Square(queries=queries)
    ta = torchattacks.Square(model, norm="Linf", eps=EPS, n_queries=queries, n_restarts=1)
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="gpu" if x.is_cuda else "cpu")
    art = SquareAttack(clf, norm=np.inf, eps=EPS, max_iter=queries - 1, p_init=0.8, nb_restarts=1,
                       batch_size=x.shape[0], verbose=False)
    x_np = x.cpu().numpy()

    def floor() -> None:
        with torch.no_grad():
            for _ in range(queries):
                model(x)

    fns: dict[str, Callable[[], Any]] = {
        "floor, forward passes": floor,
        "ours Square": lambda: ours(model, x, y, eps=EPS, generator=torch.Generator(device=x.device).manual_seed(0)),
        "torchattacks Square": lambda: ta(x, y),
        "ART SquareAttack": lambda: art.generate(x=x_np, y=y.cpu().numpy()),
    }
    desc = {"floor, forward passes": f"{queries} forward passes of the whole batch (an upper bound: every contender "
                                     f"drops fooled samples)",
            "ours Square": ours.describe(),
            "torchattacks Square": f"torchattacks.Square(model, norm='Linf', eps=8/255, n_queries={queries})",
            "ART SquareAttack": f"SquareAttack(PyTorchClassifier(..., device_type='{'gpu' if x.is_cuda else 'cpu'}'), norm=np.inf, eps=8/255, "
                                f"max_iter={queries - 1}, p_init=0.8), numpy inputs"}
    timings = best_of_interleaved(fns, repeats=repeats, warmup=warmup)
    return {"rows": _rows(timings, "floor, forward passes", set()), "descriptions": desc, "ours": "ours Square"}


def section_standard(model: nn.Module, x: Tensor, y: Tensor, repeats: int, warmup: int,
                     preset: str = "standard") -> dict[str, Any]:
    """The preset end to end, and what the same forward/backward passes cost by hand."""
    def ours() -> Any:
        return robustness.evaluate(model, (x, y), attacks=preset, epsilons=[EPS], batch_size=x.shape[0],
                                   progress=False, checks=False, seed=0)

    counter = PassCounter(model)
    report = ours()
    counter.close()
    n = x.shape[0]
    grad_batches, eval_batches = counter.grad_samples / n, counter.eval_samples / n

    def one_grad() -> None:
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y, reduction="sum"), xi)

    def one_eval() -> None:
        with torch.no_grad():
            model(x)

    fns = {"ours": ours, "one forward+backward (whole batch)": one_grad, "one forward (whole batch)": one_eval}
    timings = best_of_interleaved(fns, repeats=repeats, warmup=warmup)
    floor_s = grad_batches * timings["one forward+backward (whole batch)"].best \
        + eval_batches * timings["one forward (whole batch)"].best
    return {
        "rows": _rows({"ours": timings["ours"]}, None, set()),
        "passes": {"gradient_samples": counter.grad_samples, "evaluation_samples": counter.eval_samples,
                   "as_whole_batches": {"gradient": grad_batches, "evaluation": eval_batches}},
        "floor_same_passes_s": floor_s, "ratio_to_same_passes_best": timings["ours"].best / floor_s,
        "robust_accuracy": report.robust_accuracy[EPS], "clean_accuracy": report.clean_accuracy,
        "descriptions": {"ours": f"robustness.evaluate(model, (x, y), attacks={preset!r}, epsilons=[8/255], "
                                 f"checks=False), early stop on"},
    }


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# GPU throughput: PreAct ResNet-18, batch {result['setup']['batch']}, Linf 8/255", "",
             *provenance_lines(result["machine"], result["command"], result["date"]), "", result["setup"]["summary"],
             "", f"**Target, ours within {TARGET_RATIO:.2f}x of the floor (like for like): {result['target']}.**", ""]
    for name, sec in result["sections"].items():
        lines += [f"## {name}", ""]
        body = [[r["contender"], f"{r['best_s']:.3f}", f"{r['median_s']:.3f}",
                 "-" if r["ratio_to_floor_best"] is None else f"{r['ratio_to_floor_best']:.3f}x",
                 "-" if r["ratio_to_floor_paired_median"] is None else f"{r['ratio_to_floor_paired_median']:.3f}x",
                 "yes" if r["like_for_like"] else "no"] for r in sec["rows"]]
        lines += [markdown_table(["contender", "best (s)", "median (s)", "best / floor", "paired median / floor",
                                  "like for like"], body), ""]
        if "floor_same_passes_s" in sec:
            p = sec["passes"]
            lines += [f"Passes made: {p['gradient_samples']} samples through forward+backward, "
                      f"{p['evaluation_samples']} through forward only ({p['as_whole_batches']['gradient']:.1f} and "
                      f"{p['as_whole_batches']['evaluation']:.1f} whole batches); by hand they cost "
                      f"{sec['floor_same_passes_s']:.3f} s: ours / same passes = {sec['ratio_to_same_passes_best']:.3f}x. "
                      f"Robust accuracy {100 * sec['robust_accuracy']:.1f}% (clean {100 * sec['clean_accuracy']:.1f}%).", ""]
        lines += [f"- {k}: `{v}`" for k, v in sec["descriptions"].items()] + [""]
    return "\n".join(lines)


def _result(args: argparse.Namespace, date: str, info: dict[str, Any], batch: int, device: torch.device, steps: int,
            targets: int, queries: int, repeats: int, warmup: int, results: dict[str, Any]) -> dict[str, Any]:
    ratios = [r["ratio_to_floor_best"] for sec in results.values() for r in sec["rows"]
              if r["like_for_like"] and r["contender"].startswith("ours") and r["ratio_to_floor_best"] is not None]
    target = ("no like-for-like section ran" if not ratios else
              f"{'met' if max(ratios) <= TARGET_RATIO else 'NOT met'} (ours / floor, best times: "
              + ", ".join(f"{v:.3f}x" for v in ratios) + ")")
    return {
        "benchmark": "gpu", "command": command_line(), "date": date, "machine": info, "quick": args.quick,
        "setup": {"batch": batch, "device": str(device), "steps": steps, "apgd_t_targets": targets,
                  "square_queries": queries, "repeats": repeats, "warmup": warmup,
                  "summary": (f"PreAct ResNet-18 (random weights, torch.manual_seed(0)), {batch} x 3 x 32 x 32 uniform "
                              f"inputs, labels = clean predictions, on {device}; best and median of {repeats} "
                              f"round-robin rounds after {warmup} warm-up, CUDA synchronised around every call.")},
        "target": target, "sections": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA, else an error), cuda[:N] or cpu")
    parser.add_argument("--batch", type=int, default=None, help="inputs per batch (default 512; --quick: 8)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (best and median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--square-queries", type=int, default=None, help="Square's query budget (default 5000)")
    parser.add_argument("--no-art-apgd", action="store_true", help="leave ART's APGD out of the apgd section")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for gpu.json and gpu.md")
    parser.add_argument("--stem", default="gpu", help="result file names: STEM.json and STEM.md (default gpu)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the result files alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: use {', '.join(SECTIONS)}")
    if args.device == "auto" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run on a GPU machine, or pass --device cpu (slow; with --quick to "
                     "check the script)")
    device = torch.device("cuda" if args.device == "auto" else args.device)
    batch = args.batch or (8 if args.quick else 512)
    steps, targets = (3, 2) if args.quick else (100, 9)
    queries = args.square_queries or (20 if args.quick else 5000)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)

    date, info = now_utc(), machine_info(device, peers=("torchattacks", "foolbox", "adversarial-robustness-toolbox"))
    torch.manual_seed(0)  # fixed random weights (a benchmark script may seed the global generator)
    model = build_architecture("preact-resnet18", num_classes=10).to(device).eval()
    x = torch.rand((batch, 3, 32, 32), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    results: dict[str, Any] = {}
    for name in sections:
        log.info("section %s on %s, batch %d", name, device, batch)
        if name == "pgd10":
            results[name] = section_pgd10(model, x, y, repeats, warmup)
        elif name == "apgd":
            results[name] = section_apgd(model, x, y, repeats, warmup, steps, targets, not args.no_art_apgd)
        elif name == "square":
            results[name] = section_square(model, x, y, repeats, warmup, queries)
        else:
            results[name] = section_standard(model, x, y, repeats, warmup, "smoke" if args.quick else "standard")
        result = _result(args, date, info, batch, device, steps, targets, queries, repeats, warmup, results)
        if not args.no_write:  # after every section, so that a run stopped by a time limit keeps what it measured
            save_results(args.out, args.stem, result, _markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
