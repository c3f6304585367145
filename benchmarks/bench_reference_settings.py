"""Benchmark: our settings against the reference's (AutoAttack's code) where the two differ.

Three places where this project's attacks did not do what the reference implementation
(``pyautoattack``: ``autopgd_base.py``, ``square.py``, ``autoattack.py``) does:

* APGD's random start: ours uniform in the ball (``start="uniform"``); the reference's on its
  surface (``start="surface"``: Linf scaled so that the largest entry is ``eps``, L2 on the sphere);
* APGD's step-halving test (``halving``): ours as the paper writes it (``<``, and the stall test
  from the first checkpoint on); the reference's ``<=``, with no stall test at the first checkpoint;
* Square's ``p`` schedule: ours rescaled to the query budget (``resc_schedule=True``); the
  reference's AutoAttack runs it with the 10,000-query schedule whatever the budget (``False``).

For each, robust accuracy (re-predicted) of the attack alone at one budget, per setting, on the
shipped digits CNNs (``robustness/weights/digits_cnn.pt``, standard, and ``digits_cnn_at.pt``,
adversarially trained) over the first 150 digits test images (``--n``), at one or two budgets
per norm, over two seeds (``torch.Generator().manual_seed(seed)``); with the per-sample
comparison: samples that one setting broke and the other did not, summed over the seeds. APGD
runs 100 steps, APGD-T 3 target classes (not 9: the 2-core machine it ran on is shared; the
start and the halving test act on every target alike), Square 5,000 queries. A setting is kept
as the default of the plain class only where it breaks at least as many samples.

Run from the repository root::

    python benchmarks/bench_reference_settings.py          # writes benchmarks/results/reference_settings.{json,md}
    python benchmarks/bench_reference_settings.py --quick  # a smoke run: few images, steps and queries, writes nothing
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import robustness
from benchmarks.common import RESULTS_DIR, command_line, machine_info, markdown_table, now_utc, provenance_lines
from benchmarks.common import write_json, write_markdown
from robustness.attacks import APGD, APGDT, Square
from robustness.attacks.base import FixedBudgetAttack
from robustness.datasets import load_dataset, to_tensors
from robustness.loading import load_model

log = logging.getLogger("bench_reference_settings")

WEIGHTS = Path(robustness.__file__).resolve().parent / "weights"
MODELS = {"standard": WEIGHTS / "digits_cnn.pt", "adv-trained": WEIGHTS / "digits_cnn_at.pt"}
#: per model and norm, budgets where robust accuracy is neither ~100% nor ~0%
BUDGETS = {
    "standard": {"linf": [0.1], "l2": [0.5]},
    "adv-trained": {"linf": [0.2, 0.25], "l2": [1.0]},
}
SEEDS = (0, 1)
TARGET_CLASSES = 3


def contenders(norm: str, steps: int, queries: int) -> dict[str, dict[str, FixedBudgetAttack]]:
    """Per comparison, ``{setting label: attack}``; the first label is ours, the second the reference's."""
    return {
        "APGD-CE start": {
            "uniform": APGD(norm=norm, steps=steps, start="uniform"),
            "surface": APGD(norm=norm, steps=steps, start="surface"),
        },
        "APGD-CE halving": {
            "paper": APGD(norm=norm, steps=steps, halving="paper"),
            "reference": APGD(norm=norm, steps=steps, halving="reference"),
        },
        "APGD-T both": {
            "uniform+paper": APGDT(norm=norm, steps=steps, target_classes=TARGET_CLASSES, start="uniform",
                                   halving="paper"),
            "surface+reference": APGDT(norm=norm, steps=steps, target_classes=TARGET_CLASSES, start="surface",
                                       halving="reference"),
        },
        "Square schedule": {
            "rescaled": Square(norm=norm, queries=queries, resc_schedule=True),
            "10,000-query": Square(norm=norm, queries=queries, resc_schedule=False),
        },
    }


def broken(model: nn.Module, attack: FixedBudgetAttack, x: Tensor, y: Tensor, eps: float, seed: int) -> Tensor:
    """Per sample: correct clean and misclassified on the attack's output (re-predicted here)."""
    adv = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(adv).argmax(1) != y)


def run(n: int | None, steps: int, queries: int, seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    x, y = to_tensors(load_dataset("digits", split="test").dataset)
    if n is not None:
        x, y = x[:n], y[:n]
    rows = []
    for model_name, path in MODELS.items():
        model = load_model(str(path)).model.eval()
        with torch.no_grad():
            correct = int((model(x).argmax(1) == y).sum())
        for norm, budgets in BUDGETS[model_name].items():
            for eps in budgets:
                for comparison, pair in contenders(norm, steps, queries).items():
                    (ours, a), (ref, b) = pair.items()
                    t0 = time.perf_counter()
                    hits = {k: [broken(model, attack, x, y, eps, s) for s in seeds] for k, attack in pair.items()}
                    seconds = time.perf_counter() - t0
                    acc = {k: [(correct - int(h.sum())) / len(y) for h in v] for k, v in hits.items()}
                    only = {ours: sum(int((p & ~q).sum()) for p, q in zip(hits[ours], hits[ref])),
                            ref: sum(int((q & ~p).sum()) for p, q in zip(hits[ours], hits[ref]))}
                    row = {"model": model_name, "norm": norm, "eps": eps, "comparison": comparison,
                           "ours": ours, "reference": ref,
                           "robust_accuracy": {k: sum(v) / len(v) for k, v in acc.items()},
                           "robust_accuracy_per_seed": acc, "only_broken_by": only, "seconds": seconds}
                    log.info("%s %s %g %s: %s", model_name, norm, eps, comparison,
                             {k: f"{v:.2%}" for k, v in row["robust_accuracy"].items()})
                    rows.append(row)
    return rows


def verdicts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per comparison: over every model, norm and budget, how many samples only ours / only the reference broke."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        tally = out.setdefault(r["comparison"], {"ours": 0, "reference": 0, "cases_ours_stronger": 0,
                                                  "cases_reference_stronger": 0})
        a, b = r["only_broken_by"][r["ours"]], r["only_broken_by"][r["reference"]]
        tally["ours"] += a
        tally["reference"] += b
        tally["cases_ours_stronger"] += int(a > b)
        tally["cases_reference_stronger"] += int(b > a)
    return out


def markdown(rows: list[dict[str, Any]], summary: dict[str, dict[str, int]], meta: dict[str, Any]) -> str:
    lines = ["# Reference settings against ours (APGD start and step halving, Square's schedule)", ""]
    lines += provenance_lines(meta["machine"], meta["command"], meta["date"]) + [""]
    lines += [f"Shipped digits CNNs, {meta['n']} digits test images, APGD {meta['steps']} steps (APGD-T: "
              f"{TARGET_CLASSES} target classes), Square {meta['queries']} queries; seeds {list(meta['seeds'])}. Robust accuracy of each "
              "attack alone at one budget (mean over the seeds); `only ours` / `only ref.`: samples that one "
              "setting broke and the other did not, summed over the seeds.", ""]
    table = []
    for r in rows:
        ours, ref = r["ours"], r["reference"]
        table.append([r["model"], r["norm"], r["eps"], r["comparison"], f"{ours}: {r['robust_accuracy'][ours]:.2%}",
                      f"{ref}: {r['robust_accuracy'][ref]:.2%}", r["only_broken_by"][ours], r["only_broken_by"][ref]])
    lines.append(markdown_table(["model", "norm", "eps", "comparison", "ours", "reference", "only ours",
                                 "only ref."], table, align="lllllrrr"))
    lines += ["", "## Over every model, norm and budget", ""]
    lines.append(markdown_table(
        ["comparison", "samples only ours broke", "samples only the reference broke", "cases ours stronger",
         "cases reference stronger"],
        [[k, v["ours"], v["reference"], v["cases_ours_stronger"], v["cases_reference_stronger"]]
         for k, v in summary.items()]))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few images, steps and queries; writes nothing")
    parser.add_argument("--n", type=int, default=150, help="the first n digits test images (default 150)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    n, steps, queries, seeds = (64, 10, 100, SEEDS[:1]) if args.quick else (args.n, 100, 5000, SEEDS)
    rows = run(n, steps, queries, seeds)
    summary = verdicts(rows)
    meta = {"command": command_line(), "date": now_utc(), "machine": machine_info("cpu"),
            "n": n, "steps": steps, "queries": queries, "seeds": list(seeds)}
    text = markdown(rows, summary, meta)
    if args.quick:
        sys.stdout.write(text)
        return
    write_json(RESULTS_DIR / "reference_settings.json", {**meta, "rows": rows, "summary": summary})
    write_markdown(RESULTS_DIR / "reference_settings.md", text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
