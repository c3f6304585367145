"""Command-line interface: a thin adapter over :func:`robustness.evaluate`.

``robustness evaluate`` parses arguments, loads the model and data, calls ``evaluate``,
prints the table, writes the report and picks the exit code: 0 ok, 1 the
``--min-accuracy`` gate failed, 2 a usage or input error (one line, no traceback).
``robustness list attacks`` lists the registered attacks.

Without arguments it evaluates the shipped digits model on the digits test split: FGSM and
PGD over an Linf sweep, then PGD and Carlini-Wagner over an L2 sweep (CW is an L2 attack).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from robustness import datasets, loading, runner
from robustness.errors import InputError
from robustness.norms import NORMS
from robustness.registry import ATTACKS
from robustness.report import Report, format_eps

__all__ = ["main", "parse_epsilons", "build_parser"]

log = logging.getLogger("robustness")

#: default sweeps per dataset and norm (budgets in pixel space, inputs in [0, 1])
DEFAULT_EPS: dict[str, dict[str, str]] = {
    "digits": {"linf": "0,0.05,0.1,0.15,0.2,0.3", "l2": "0,0.5,1,1.5,2"},
    "mnist": {"linf": "0,0.1,0.2,0.3", "l2": "0,1,2,3"},
    "fashion-mnist": {"linf": "0,0.05,0.1,0.2", "l2": "0,0.5,1,2"},
    "*": {"linf": "0,2/255,4/255,8/255,16/255", "l2": "0,0.25,0.5,1"},
}
#: attacks run for each norm when --attacks is not given
DEFAULT_ATTACKS: dict[str, str] = {"linf": "fgsm,pgd", "l2": "pgd,cw"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"robustness: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def parse_epsilons(text: str) -> list[float]:
    """``"0,2/255,0.1"`` -> ``[0.0, 0.00784..., 0.1]``; raises :class:`InputError` on bad values."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(Fraction(part))
        except (ValueError, ZeroDivisionError):
            raise InputError(f"--eps: {part!r} is not a number (use e.g. 0.1 or 8/255, comma separated)") from None
        if value < 0:
            raise InputError(f"--eps: budgets must be >= 0, got {part}")
        values.append(value)
    if not values:
        raise InputError("--eps: give at least one budget, e.g. --eps 0,2/255,8/255")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robustness", description="Adversarial robustness testing harness for PyTorch.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    ev = sub.add_parser("evaluate", help="robust accuracy per budget (the default command)")
    ev.add_argument("--model", default=None,
                    help="checkpoint, TorchScript file, torchvision:NAME or package.module:factory "
                         "(default: the shipped digits CNN)")
    ev.add_argument("--arch", default=None, help="architecture of a plain state-dict checkpoint")
    ev.add_argument("--mean", default=None,
                    help="per-channel normalization mean the model expects, e.g. 0.4914,0.4822,0.4465 "
                         "(our checkpoints record it; needed for plain state dicts and torchvision models)")
    ev.add_argument("--std", default=None, help="per-channel normalization std, with --mean")
    ev.add_argument("--data", default="digits",
                    help="digits (default), mnist, fashion-mnist, cifar10, cifar100, svhn, imagefolder:PATH, "
                         "or a .npz/.pt file with x and y")
    ev.add_argument("--data-dir", default=None, help="where torchvision datasets live")
    ev.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    ev.add_argument("--split", default="test", choices=["train", "test"])
    ev.add_argument("--attacks", default=None,
                    help="comma-separated registry names (see `robustness list attacks`); "
                         "default: fgsm,pgd for linf and pgd,cw for l2")
    ev.add_argument("--eps", default=None, help="comma-separated budgets, fractions allowed: 0,2/255,8/255")
    ev.add_argument("--norm", default=None, choices=list(NORMS),
                    help="default: linf, and with no --attacks/--eps also an l2 sweep")
    ev.add_argument("--n", type=int, default=None, help="evaluate a seeded random subset of n examples")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default="robustness-report", help="directory for report.json, report.md and the plot")
    ev.add_argument("--min-accuracy", type=float, default=None,
                    help="exit 1 if the worst-case robust accuracy at the largest budget is below this (0..1)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars or logs; one line per sweep")
    ls = sub.add_parser("list", help="list registered plug-ins")
    ls.add_argument("what", choices=["attacks"])
    return parser


@dataclass(frozen=True)
class _Sweep:
    norm: str
    attacks: list[str]
    epsilons: list[float]


def _sweeps(args: argparse.Namespace, dataset: str) -> list[_Sweep]:
    table = DEFAULT_EPS.get(dataset, DEFAULT_EPS["*"])
    norms = [args.norm] if args.norm else (["linf"] if args.attacks or args.eps else ["linf", "l2"])
    out = []
    for norm in norms:
        names = [a.strip().lower() for a in (args.attacks or DEFAULT_ATTACKS[norm]).split(",") if a.strip()]
        if not names:
            raise InputError("--attacks: give at least one attack name, e.g. --attacks fgsm,pgd")
        out.append(_Sweep(norm, names, parse_epsilons(args.eps or table[norm])))
    return out


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(Fraction(p.strip())) for p in text.split(",") if p.strip()]
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InputError(f"--device: unknown device {text!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {text}: CUDA is not available on this machine; use --device cpu")
    return device


def _evaluate(args: argparse.Namespace) -> int:
    if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1:
        raise InputError(f"--min-accuracy must be a fraction in [0, 1], got {args.min_accuracy}")
    device = _device(args.device)
    torch.manual_seed(args.seed)
    data = datasets.load_dataset(args.data, split=args.split, data_dir=args.data_dir, download=args.download,
                                 n=args.n, seed=args.seed)
    if args.model is None:
        loaded = loading.default_model()
    else:
        loaded = loading.load_model(args.model, arch=args.arch, num_classes=data.num_classes,
                                    in_channels=data.input_shape[0], mean=_floats(args.mean, "--mean"),
                                    std=_floats(args.std, "--std"))
    sweeps = _sweeps(args, data.name)
    failed = False
    for sweep in sweeps:
        report = runner.evaluate(
            loaded.model, data.dataset, attacks=sweep.attacks, epsilons=sweep.epsilons, norm=sweep.norm,
            bounds=data.bounds, batch_size=args.batch_size, device=device, seed=args.seed,
            progress=not args.quiet,
        )
        report.model = loaded.source
        report.data = f"{data.name} ({args.split})"
        out = Path(args.out) / sweep.norm if len(sweeps) > 1 else Path(args.out)
        report.save(out)
        gate = args.min_accuracy is not None and report.worst_case < args.min_accuracy
        failed |= gate
        _print(report, out, args, gate)
    return 1 if failed else 0


def _print(report: Report, out: Path, args: argparse.Namespace, gate: bool) -> None:
    top = format_eps(max(report.robust_accuracy))
    line = (f"{report.norm}: clean {100 * report.clean_accuracy:.1f}%, worst case at eps={top}: "
            f"{100 * report.worst_case:.1f}% ({report.n_examples} examples, {report.timings['total']:.1f} s) "
            f"-> {out}")
    if gate:
        line += f"  FAILED --min-accuracy {args.min_accuracy}"
    if not args.quiet:
        print(f"\n{report.model} on {report.data}, {report.norm} sweep")
        for w in report.warnings:
            print(f"warning: {w}")
        print(report.table())
    print(line)


def _list(args: argparse.Namespace) -> int:
    for name in ATTACKS.list():
        doc = (ATTACKS.load(name).__doc__ or "").strip().splitlines()
        print(f"{name:10s} {doc[0] if doc else ''}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["evaluate", *argv]
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    try:
        if args.command == "list":
            return _list(args)
        return _evaluate(args)
    except InputError as e:
        sys.stderr.write(f"robustness: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("robustness: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
