"""Benchmark: the ``standard`` preset against the reference AutoAttack run per budget, as its users do.

Setup: the shipped digits CNNs (``robustness/weights/digits_cnn_at.pt``, PGD-7 adversarially trained
at Linf 0.2, and ``digits_cnn.pt``, standard training), loaded with ``robustness.loading.load_model``,
on the first ``--n`` digits test images (``robustness.datasets.load_dataset("digits", split="test")``),
four Linf budgets and three L2 budgets.

* ours: ``robustness.evaluate(model, (x, y), attacks=PRESET, epsilons=[0, *budgets], norm=...)``, one
  call per norm for all of its budgets (ascending, warm-started, cascaded: the preset's default),
  checks off, seed 0;
* the reference: ``pyautoattack.AutoAttack(model, norm=..., eps=eps, version="standard", seed=0)``
  and ``run_standard_evaluation(x, y, batch_size=n)`` (it returns a tuple ``(x_adv, y_adv)`` in this
  packaging), once per budget. With ``--preset standard-nofab`` the reference runs
  ``version="custom"`` with ``apgd-ce``, ``apgd-t`` and ``square``, set as its standard version
  sets them (APGD-CE 1 restart, APGD-T 9 target classes, 1 restart; Square 5,000 queries): the
  custom version alone would keep APGD-CE at 5 restarts;
* beside them, torchattacks' ``AutoAttack(model, norm=..., eps=eps, version="standard", seed=0)``
  per budget (for ``standard-nofab``: its APGD, APGDT and Square with the same settings it uses
  there, in a ``MultiAttack``; note torchattacks' APGD defaults to 10 steps, the reference's 100).

Every tool's output is re-predicted here. Per budget: robust accuracy; per-sample strength against
the reference (samples the reference broke that we left unbroken: the target is 0 everywhere; and
the reverse); time (ours: one sweep per norm; the others: the sum of their per-budget runs); the
ratio ours / reference (target: at most 0.6 for ``standard``).

Run from the repository root::

    python benchmarks/bench_protocols.py --preset standard-nofab --n 100   # writes benchmarks/results/protocols_nofab.{json,md}
    python benchmarks/bench_protocols.py --preset standard                  # writes benchmarks/results/protocols.{json,md}
    python benchmarks/bench_protocols.py --quick                            # a smoke run: writes nothing
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import robustness
from benchmarks.common import RESULTS_DIR, command_line, machine_info, markdown_table, now_utc, provenance_lines
from benchmarks.common import write_json, write_markdown
from robustness.datasets import load_dataset, to_tensors
from robustness.loading import load_model

log = logging.getLogger("bench_protocols")

WEIGHTS = Path(robustness.__file__).resolve().parent / "weights"
MODELS = {"adv-trained": WEIGHTS / "digits_cnn_at.pt", "standard": WEIGHTS / "digits_cnn.pt"}
BUDGETS = {"linf": [0.1, 0.2, 0.25, 0.3], "l2": [0.5, 1.0, 1.5], "l1": [1.0, 2.0, 3.0]}
QUICK_BUDGETS = {"linf": [0.1, 0.2], "l2": [1.0]}
REFERENCE_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}
NOFAB = ["apgd-ce", "apgd-t", "square"]


def _broken(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(x_adv.to(x.dtype)).argmax(1) != y)


def ours(model: nn.Module, x: Tensor, y: Tensor, norm: str, budgets: list[float], preset: str) -> tuple[
        dict[float, Tensor], float, dict[str, Any]]:
    """Per budget, the samples broken (clean-correct and no longer); the seconds of the one sweep."""
    t0 = time.perf_counter()
    report = robustness.evaluate(model, (x, y), attacks=preset, epsilons=[0.0, *budgets], norm=norm, checks=False,
                                 progress=False, seed=0, batch_size=x.shape[0])
    seconds = time.perf_counter() - t0
    worst = torch.tensor(report.per_sample["broken_at:worst"])
    return {e: worst <= i for i, e in enumerate(budgets)}, seconds, {"cascade": report.cascade,
                                                                     "attacks": report.attacks}


def reference(model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, preset: str) -> Tensor:
    from pyautoattack import AutoAttack

    if preset == "standard":
        adversary = AutoAttack(model, norm=REFERENCE_NORM[norm], eps=eps, version="standard", seed=0, device="cpu")
    else:
        adversary = AutoAttack(model, attacks=list(NOFAB), norm=REFERENCE_NORM[norm], eps=eps, version="custom",
                               seed=0, device="cpu")
        adversary.apgd.n_restarts = 1  # as _set_version("standard") sets them for Linf and L2
        adversary.apgd_targeted.n_target_classes = 9
        adversary.apgd_targeted.n_restarts = 1
        adversary.square.n_queries = 5000
    adversary.verbose = False
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
    return _broken(model, x, y, x_adv)


def torchattacks_run(model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, preset: str) -> Tensor:
    import torchattacks

    name = REFERENCE_NORM[norm]
    if preset == "standard":
        attack = torchattacks.AutoAttack(model, norm=name, eps=eps, version="standard", n_classes=10, seed=0)
    else:  # torchattacks' standard AutoAttack without its FAB, with the settings it uses there
        attack = torchattacks.MultiAttack([
            torchattacks.APGD(model, eps=eps, norm=name, seed=0, loss="ce", n_restarts=1),
            torchattacks.APGDT(model, eps=eps, norm=name, seed=0, n_classes=10, n_restarts=1),
            torchattacks.Square(model, eps=eps, norm=name, seed=0, n_queries=5000, n_restarts=1),
        ])
    return _broken(model, x, y, attack(x, y))


def run(n: int, preset: str, budgets_by_norm: dict[str, list[float]], with_torchattacks: bool) -> list[dict[str, Any]]:
    x, y = to_tensors(load_dataset("digits", split="test").dataset)
    x, y = x[:n].float(), y[:n].long()
    rows = []
    for model_name, path in MODELS.items():
        model = load_model(str(path)).model.eval()
        with torch.no_grad():
            clean = int((model(x).argmax(1) == y).sum())
        for norm, budgets in budgets_by_norm.items():
            broken, our_seconds, meta = ours(model, x, y, norm, budgets, preset)
            for eps in budgets:
                t0 = time.perf_counter()
                ref = reference(model, x, y, norm, eps, preset)
                ref_seconds = time.perf_counter() - t0
                row = {"model": model_name, "norm": norm, "eps": eps, "n": n, "clean": clean / n,
                       "robust_accuracy": {"ours": (clean - int(broken[eps].sum())) / n,
                                           "reference": (clean - int(ref.sum())) / n},
                       "reference_broke_ours_not": int((ref & ~broken[eps]).sum()),
                       "ours_broke_reference_not": int((broken[eps] & ~ref).sum()),
                       "seconds": {"reference": ref_seconds}, "cascade": meta["cascade"]}
                if with_torchattacks and norm != "l1":  # torchattacks' AutoAttack has no L1
                    t0 = time.perf_counter()
                    ta = torchattacks_run(model, x, y, norm, eps, preset)
                    row["seconds"]["torchattacks"] = time.perf_counter() - t0
                    row["robust_accuracy"]["torchattacks"] = (clean - int(ta.sum())) / n
                    row["torchattacks_broke_ours_not"] = int((ta & ~broken[eps]).sum())
                rows.append(row)
                log.info("%s %s %g: %s, reference broke %d that ours did not", model_name, norm, eps,
                         {k: f"{v:.1%}" for k, v in row["robust_accuracy"].items()}, row["reference_broke_ours_not"])
            for row in rows[-len(budgets):]:
                row["seconds"]["ours_sweep"] = our_seconds  # one sweep answers every budget of the norm
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model and norm: our sweep's seconds against the sum of the reference's per-budget runs."""
    out: dict[str, Any] = {}
    for r in rows:
        key = f"{r['model']} {r['norm']}"
        t = out.setdefault(key, {"ours": r["seconds"]["ours_sweep"], "reference": 0.0, "torchattacks": 0.0,
                                 "reference_broke_ours_not": 0})
        t["reference"] += r["seconds"]["reference"]
        t["torchattacks"] += r["seconds"].get("torchattacks", 0.0)
        t["reference_broke_ours_not"] += r["reference_broke_ours_not"]
    for t in out.values():
        t["ratio_ours_reference"] = t["ours"] / t["reference"] if t["reference"] else float("nan")
    return out


def markdown(rows: list[dict[str, Any]], total: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"# Protocols: the `{meta['preset']}` preset against AutoAttack's reference, per budget", ""]
    lines += provenance_lines(meta["machine"], meta["command"], meta["date"]) + [""]
    lines += [f"{meta['n']} digits test images; ours: one cascaded sweep per norm (`attacks=\"{meta['preset']}\"`); "
              f"reference: pyautoattack `{meta['reference']}` run per budget; torchattacks beside them. "
              "`ref. only`: samples the reference broke that ours left unbroken (target 0).", ""]
    has_ta = any("torchattacks" in r["robust_accuracy"] for r in rows)
    head = ["model", "norm", "eps", "clean", "ours", "reference"] + (["torchattacks"] if has_ta else [])
    head += ["ref. only", "ours only"] + (["torchattacks only"] if has_ta else [])
    table = []
    for r in rows:
        acc = r["robust_accuracy"]
        cells = [r["model"], r["norm"], r["eps"], f"{r['clean']:.1%}", f"{acc['ours']:.1%}", f"{acc['reference']:.1%}"]
        cells += [f"{acc['torchattacks']:.1%}"] if has_ta else []
        cells += [r["reference_broke_ours_not"], r["ours_broke_reference_not"]]
        cells += [r["torchattacks_broke_ours_not"]] if has_ta else []
        table.append(cells)
    lines.append(markdown_table(head, table, align="lll" + "r" * (len(head) - 3)))
    lines += ["", "## Time (seconds; ours: one sweep over the norm's budgets, the others: the sum of their "
              "per-budget runs)", ""]
    lines.append(markdown_table(
        ["model, norm", "ours", "reference", "torchattacks", "ours / reference", "ref. only (all budgets)"],
        [[k, f"{v['ours']:.1f}", f"{v['reference']:.1f}", f"{v['torchattacks']:.1f}" if has_ta else "-",
          f"{v['ratio_ours_reference']:.2f}", v["reference_broke_ours_not"]] for k, v in total.items()]))
    all_ours = sum(v["ours"] for v in total.values())
    all_ref = sum(v["reference"] for v in total.values())
    lines += ["", f"Overall: ours {all_ours:.1f} s, reference {all_ref:.1f} s, ratio {all_ours / all_ref:.2f}; "
              f"samples the reference broke and ours did not: {sum(v['reference_broke_ours_not'] for v in total.values())}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard", choices=["standard", "standard-nofab"])
    parser.add_argument("--n", type=int, default=450, help="the first n digits test images (default: all 450)")
    parser.add_argument("--no-torchattacks", action="store_true", help="skip torchattacks")
    parser.add_argument("--quick", action="store_true", help="32 images, 3 budgets; writes nothing")
    parser.add_argument("--norms", default="linf,l2", help="comma list of linf, l2, l1 (l1: the standard preset "
                        "only, written to protocols_l1.*)")
    args = parser.parse_args()
    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    if "l1" in norms and (args.preset != "standard" or norms != ["l1"]):
        parser.error("--norms l1 runs alone and with --preset standard (AutoAttack's L1 protocol)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    n, budgets = (32, QUICK_BUDGETS) if args.quick else (args.n, BUDGETS)
    budgets = {norm: budgets[norm] for norm in norms if norm in budgets}
    rows = run(n, args.preset, budgets, not args.no_torchattacks)
    total = totals(rows)
    reference_name = ('AutoAttack(version="standard")' if args.preset == "standard" else
                      'AutoAttack(version="custom", attacks=["apgd-ce", "apgd-t", "square"]) with the standard settings')
    meta = {"command": command_line(), "date": now_utc(), "machine": machine_info("cpu", peers=("pyautoattack",
            "torchattacks")), "n": n, "preset": args.preset, "reference": reference_name, "budgets": budgets}
    text = markdown(rows, total, meta)
    sys.stdout.write(text)
    if args.quick:
        return
    stem = "protocols" if args.preset == "standard" else "protocols_nofab"
    if norms == ["l1"]:
        stem = "protocols_l1"
    write_json(RESULTS_DIR / f"{stem}.json", {**meta, "rows": rows, "totals": total})
    write_markdown(RESULTS_DIR / f"{stem}.md", text)


if __name__ == "__main__":
    main()
