"""Is a change in random draws a change in strength? Compare robust accuracy over several seeds.

Each argument group is a list of report trees made with different seeds (``robustness evaluate
--seed S --out DIR``), before and after a change that alters the random draws on purpose. For every
report (model, norm) and budget, it prints the mean worst-case robust accuracy over the seeds
before and after, the seed-to-seed standard deviation, and flags a budget whose shift of the mean
exceeds ``--sigmas`` standard errors of the difference (with a floor of one sample, 1/n, since
accuracies move in steps of one example).

Usage::

    python scripts/compare_seeds.py --before s0 s1 s2 s3 s4 --after t0 t1 t2 t3 t4

Exit status 1 when any budget shifts beyond the noise, else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path


def _curves(root: Path) -> dict[str, tuple[int, dict[str, float]]]:
    out = {}
    for rep in sorted(root.rglob("report.json")):
        data = json.loads(rep.read_text())
        out[str(rep.parent.relative_to(root))] = (data["n_examples"], data["robust_accuracy"])
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", nargs="+", type=Path, required=True)
    parser.add_argument("--after", nargs="+", type=Path, required=True)
    parser.add_argument("--sigmas", type=float, default=3.0)
    args = parser.parse_args(argv)
    before = [_curves(d) for d in args.before]
    after = [_curves(d) for d in args.after]
    shifted = 0
    for key in sorted(before[0]):
        n = before[0][key][0]
        print(f"\n{key} ({n} examples; {len(before)} seeds before, {len(after)} after)")
        print("| eps | before mean | after mean | seed std | shift | verdict |")
        print("|---:|---:|---:|---:|---:|---|")
        for eps in before[0][key][1]:
            b = [c[key][1][eps] for c in before]
            a = [c[key][1][eps] for c in after]
            sd = max(statistics.pstdev(b + a), 1.0 / n)
            se = sd * math.sqrt(1 / len(b) + 1 / len(a))
            shift = statistics.mean(a) - statistics.mean(b)
            ok = abs(shift) <= args.sigmas * se + 1e-12
            shifted += not ok
            print(f"| {float(eps):g} | {100 * statistics.mean(b):.2f}% | {100 * statistics.mean(a):.2f}% | "
                  f"{100 * statistics.pstdev(b + a):.2f} | {100 * shift:+.2f} | {'within noise' if ok else 'SHIFTED'} |")
    print(f"\n{shifted} budget(s) shifted beyond {args.sigmas:g} standard errors")
    return 1 if shifted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
