"""``robustness evaluate`` on common corruptions: accuracy per corruption and severity instead of attacks.

``--data cifar10-c`` (``cifar100-c``, ``imagenet-c``), or ``--threat-model corruptions`` with ``--data
cifar10`` (``cifar100``, ``imagenet``), evaluates the model on the corruption files in ``--data-dir``
(:func:`robustness.corruptions.load_corruptions`) and writes a
:class:`~robustness.corruption_report.CorruptionReport` to ``--out``. ``--corruptions a,b`` and
``--severities 1,3,5`` restrict what is evaluated (default: the 15 standard corruptions, severities 1-5).
Attack flags (``--attacks``, ``--eps``, ``--norm``) and the other attack-only settings are refused: there
is no attack. Exit codes as ``evaluate``'s: 0 ok, 1 ``--min-accuracy`` above the mean corruption
accuracy, 2 usage or input error.

:func:`robustness.cli._evaluate` calls :func:`maybe_evaluate` first; it returns ``None`` when the
command is not a corruption evaluation.

Example::

    robustness evaluate --model robustbench:Hendrycks2020AugMix_WRN --data cifar10-c --data-dir ~/data \\
        --corruptions fog,snow --severities 1,3,5 --n 1000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from robustness import loading
from robustness.cli.common import check_writable, naming, parse_device, print_report_body
from robustness.corruption_report import CorruptionReport, evaluate_corruptions
from robustness.corruptions import CORRUPTION_DATASETS, CORRUPTIONS, SEVERITIES, corruption_name, load_corruptions
from robustness.datasets import default_data_dir
from robustness.errors import InputError

__all__ = ["add_corruption_flags", "corruption_request", "maybe_evaluate", "parse_corruptions", "parse_severities"]

#: flags of attack evaluations that mean nothing without attacks: (attribute, flag, is it set)
_ATTACK_ONLY = (
    ("attacks", "--attacks", lambda v: v is not None),
    ("eps", "--eps", lambda v: v is not None),
    ("norm", "--norm", lambda v: v is not None),
    ("state", "--state", lambda v: v is not None),
    ("cascade", "--cascade/--no-cascade", lambda v: v is not None),
    ("schedule", "--schedule", lambda v: v not in (None, "ascending")),
    ("strict", "--strict", bool),
    ("no_checks", "--no-checks", bool),
    ("amp", "--amp", lambda v: v is not None),
    ("compile", "--compile", bool),
    ("channels_last", "--channels-last", bool),
    ("download", "--download", bool),
)


def add_corruption_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``--corruptions`` and ``--severities`` to ``evaluate``'s parser."""
    parser.add_argument("--corruptions", default=None,
                        help="with corruption data (--data cifar10-c, cifar100-c, imagenet-c, or --threat-model "
                             "corruptions): the corruptions to evaluate, comma-separated, e.g. fog,snow (default: "
                             "the 15 standard ones)")
    parser.add_argument("--severities", default=None,
                        help="with corruption data: the severity levels to evaluate, e.g. 1,3,5 (default: 1,2,3,4,5)")


def parse_corruptions(text: str | None) -> list[str] | None:
    """``--corruptions fog,snow`` -> ``["fog", "snow"]``; ``None`` -> ``None`` (the 15 standard ones)."""
    if text is None:
        return None
    items = [t.strip().lower() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise InputError(f"--corruptions: empty item in {text!r}: give names separated by single commas, e.g. "
                         f"--corruptions fog,snow (the standard ones: {', '.join(CORRUPTIONS)})")
    return items


def parse_severities(text: str | None) -> list[int]:
    """``--severities 1,3,5`` -> ``[1, 3, 5]``; ``None`` -> 1 to 5."""
    if text is None:
        return list(SEVERITIES)
    out = []
    for item in text.split(","):
        try:
            level = int(item.strip())
        except ValueError:
            raise InputError(f"--severities: {item.strip()!r} is not a level: give levels from 1 to 5 separated by "
                             "commas, e.g. --severities 1,3,5") from None
        if not 1 <= level <= 5:
            raise InputError(f"--severities: level {level} is outside 1..5")
        out.append(level)
    return out


def corruption_request(args: argparse.Namespace) -> str | None:
    """The corruption data set the command asks for (``"cifar10-c"``), or ``None`` for an attack evaluation.

    ``--data cifar10-c`` names it; ``--threat-model corruptions`` (read with ``getattr``: another part of
    the CLI adds that flag) turns ``--data cifar10``/``cifar100``/``imagenet`` into their ``-c`` sets."""
    named = corruption_name(args.data) if isinstance(args.data, str) else None
    threat = getattr(args, "threat_model", None)
    if named is not None or not (isinstance(threat, str) and threat.lower() == "corruptions"):
        return named
    base = str(args.data).strip().lower().replace("-", "")
    for key, (_, clean, _) in CORRUPTION_DATASETS.items():
        if base == clean:
            return key
    raise InputError(f"--threat-model corruptions needs corruption data: --data cifar10, cifar100 or imagenet "
                     f"(their common corruptions, read from --data-dir), or {', '.join(CORRUPTION_DATASETS)}; "
                     f"got --data {args.data}")


def maybe_evaluate(args: argparse.Namespace) -> int | None:
    """Run a corruption evaluation when the command asks for one (:func:`corruption_request`) and return its
    exit code; ``None`` otherwise (``--corruptions``/``--severities`` without corruption data is an error)."""
    name = corruption_request(args)
    if name is None:
        given = [f for f, v in (("--corruptions", getattr(args, "corruptions", None)),
                                ("--severities", getattr(args, "severities", None))) if v is not None]
        if given:
            raise InputError(f"{' and '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to corruption data only: "
                             f"use --data {', '.join(CORRUPTION_DATASETS)} (or --threat-model corruptions)")
        return None
    return _evaluate_corruptions(args, name)


def _check_flags(args: argparse.Namespace, name: str) -> None:
    """Refuse what a corruption evaluation cannot honour, before any work."""
    given = [flag for attr, flag, is_set in _ATTACK_ONLY if is_set(getattr(args, attr, None))]
    if given:
        raise InputError(f"{', '.join(given)}: --data {name} evaluates accuracy per corruption and severity, "
                         "without attacks: drop these flags (or evaluate attacks on clean data, e.g. --data "
                         f"{CORRUPTION_DATASETS[name][1]})")
    if args.split != "test":
        raise InputError(f"--split {args.split}: common corruptions exist for the test set only")
    if getattr(args, "subset", None) is not None and name != "imagenet-c":
        raise InputError(f"--subset applies to imagenet and imagenet-c, not {name}")
    if args.model is None:
        raise InputError(f"--data {name} needs --model: the shipped digits models do not take {name}'s images")
    if (args.mean is None) != (args.std is None):
        raise InputError("--mean and --std go together: give both (the model's per-channel normalization), "
                         "or neither")
    if "WORLD_SIZE" in os.environ and os.environ.get("WORLD_SIZE") not in ("", "1"):
        raise InputError(f"--data {name} runs in one process: drop --nproc / torchrun")


def _floats(text: str | None, flag: str) -> list[float] | None:
    from robustness.cli.common import parse_floats

    return None if text is None else parse_floats(text, flag)


def _load_model(args: argparse.Namespace, name: str, **data: Any) -> loading.LoadedModel:
    """``--model`` loaded as ``evaluate`` loads it, with the model-source flags (a ``robustbench:`` model of
    the corruptions threat model, by default)."""
    with naming("--model", args.model):
        return loading.load_model(args.model, arch=args.arch, mean=_floats(args.mean, "--mean"),
                                  std=_floats(args.std, "--std"), dataset=CORRUPTION_DATASETS[name][1],
                                  threat_model=args.threat_model or "corruptions", model_dir=args.model_dir,
                                  model_info_dir=args.model_info, weights=args.weights, **data)


def _evaluate_corruptions(args: argparse.Namespace, name: str) -> int:
    _check_flags(args, name)
    corruptions = parse_corruptions(getattr(args, "corruptions", None))
    severities = parse_severities(getattr(args, "severities", None))
    device = parse_device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory: give a directory for the report files")
    check_writable(out, "--out")
    torch.manual_seed(args.seed)
    root = Path(args.data_dir).expanduser() if args.data_dir is not None else default_data_dir()
    common = {"data_dir": root, "corruptions": corruptions, "severities": severities, "n": args.n, "seed": args.seed}
    if name == "imagenet-c":  # the model's input size decides the images' size: the model first
        loaded = _load_model(args, name, min_classes=1000, in_channels=3)
        with naming("--data", name):
            data = load_corruptions(name, **common, input_transform=loaded.input_transform,
                                    subset=getattr(args, "subset", None))
    else:
        with naming("--data", name):
            data = load_corruptions(name, **common)
        loaded = _load_model(args, name, min_classes=data.num_classes, in_channels=data.input_shape[0],
                             input_shape=data.input_shape)
    clean, note = data.clean()
    report = evaluate_corruptions(loaded.model, data, batch_size=args.batch_size, device=device,
                                  progress=not args.quiet, clean=clean, clean_note=note, model_info=loaded.info)
    report.warnings = [*report.warnings, *(w for w in loaded.warnings if w not in report.warnings)]
    report.set_published()  # the leaderboard's claimed corruption accuracy beside ours (robustbench: models)
    gate = args.min_accuracy is not None and report.mean_accuracy < args.min_accuracy
    _print(report, out, args, gate)
    report.save(out)
    if args.format == "robustbench":
        from robustness.cli import _write_robustbench

        _write_robustbench(report, out, args)
    return 1 if gate else 0


def _print(report: CorruptionReport, out: Path, args: argparse.Namespace, gate: bool) -> None:
    if not args.quiet:
        print(f"\n{report.model.label if report.model else 'model'} on {report.data}: accuracy per severity")
        print_report_body(report, args)
    line = f"{report.summary_line()} -> {out}"
    if report.model is not None and report.model.initial_weights:
        line += "  UNTRAINED: initial random weights"
    if gate:
        line += f"  FAILED --min-accuracy {args.min_accuracy} (mean corruption accuracy)"
    print(line)
