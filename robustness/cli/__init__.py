"""Command-line interface: a thin adapter over :func:`robustness.evaluate`.

``robustness evaluate`` parses arguments, loads the model and data, calls ``evaluate``,
prints the table, writes the report and picks the exit code: 0 ok, 1 a gate failed
(``--min-accuracy``, or a check under ``--strict``), 2 a usage or input error (one line, no
traceback; flags, attacks, budgets and ``--out`` are checked before any work; an empty value or
an empty item in a list is an error, never a default), 3 an internal error (one line; ``--debug``,
before or after the command, re-raises it with its traceback). It exits 0 only after every report
was written, and user code that calls ``sys.exit`` (a model factory, a model's forward) is an
error, never the command's exit. Budgets typed as fractions (``8/255``) print as typed.
``--eps curve`` (alone or among budgets: ``curve,0,0.5,1``) measures the robustness curve with the
minimization attacks (default attacks then: :data:`CURVE_ATTACKS`) and prints the median distance
and, at each listed budget, how far the minimization attacks' curve lies above the fixed-budget
attacks' worst case. ``--model`` also takes the shipped models' names (``digits-cnn``, ``digits-cnn-at``)
and the model sources (``robustbench:NAME`` with ``--threat-model``/``--model-dir``, ``timm:NAME``,
``torchvision:NAME`` with ``--weights``: see :mod:`robustness.sources`); with ``--data imagenet`` the
model is loaded first and the images take the resize/center-crop its weights declare.
ART's log lines and the loader's notes show only with ``--verbose``.
``robustness list attacks`` lists the registered attacks: the norms each supports, its kind and
its settings with their defaults (from the attack's dataclass fields).
``--format robustbench`` also writes robustbench.json, the run as an entry of RobustBench's leaderboard
(:mod:`robustness.leaderboard_entry`). A model whose source publishes figures gets them beside ours
(:mod:`robustness.claims`). ``robustness compare DIR...`` (:mod:`robustness.cli.compare`) puts saved
reports side by side.

Without arguments it evaluates both shipped digits models (``standard`` and ``adv-trained``)
on the digits test split: FGSM, PGD and APGD-CE over an Linf sweep, then PGD, APGD-CE (two
restarts) and Carlini-Wagner over an L2 sweep (CW is an L2 attack): attacks strong enough that
both models pass every sanity check. It prints one table per sweep with the two models side by side
and writing the reports to ``OUT/<model>/<norm>/``; ``--min-accuracy`` gates on both. The
shipped CNNs are tiny, so that run uses one CPU thread (restored afterwards): many times faster
than several threads, above all on a busy machine.

``robustness train`` (:mod:`robustness.cli.train`) is a thin adapter over
:class:`robustness.defenses.AdversarialTrainer`: it builds the model, loaders, optimizer and a one-cycle
learning rate, trains resumably (``OUT.state``) and writes ``OUT``, which ``robustness evaluate
--model OUT`` reads with no other flag. Exit codes: 0 ok, 2 usage or input error, 3 internal error.

Several processes (:mod:`robustness.distributed`). Under ``torchrun --nproc_per_node=K -m robustness
...`` (``WORLD_SIZE`` > 1) both commands initialize the process group (gloo on the CPU; on CUDA
each rank takes ``cuda:LOCAL_RANK``), ``evaluate`` shards the batches and ``train`` runs
DistributedDataParallel with ``--batch-size`` as the global batch; only rank 0 prints and writes
files, and every rank exits with rank 0's code. ``--nproc K`` does the same launch itself
(:mod:`robustness.cli.launch`) and keeps the exit codes 0/1/2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import math
import os
import re
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustness import datasets, loading, runner
from robustness.cli.common import (INT64_MAX, add_nproc, check_writable, epsilon_labels, float_type, int_type,
                                   naming, parse_device, parse_epsilons, parse_floats, parse_seed,
                                   print_report_body)
from robustness.cli.compare import add_compare_parser, run_compare
from robustness.cli.corruptions import add_corruption_flags, maybe_evaluate
from robustness.cli.train import _add_train_parser, _train
from robustness.config import EvalConfig, check_curve_attacks
from robustness.distributed import CollectiveError, torchrun_session
from robustness.errors import InputError, RobustnessWarning
from robustness.named_models import SHIPPED, model_names
from robustness.norms import NORMS, box_diameter
from robustness.attacks.presets import PRESETS
from robustness.registry import ATTACKS
from robustness.sources import source_prefix
from robustness.report import Report, eps_labels, format_eps

__all__ = ["main", "parse_epsilons", "build_parser", "split_attack_list"]

log = logging.getLogger("robustness")

#: default sweeps per dataset and norm (budgets in pixel space, inputs in [0, 1]). L1: digits' 64
#: pixels take budgets 0.5 to 4 (one to four whole pixels; the tests' digits CNN falls from 99% to
#: about 65%, 15% and 0% at 1, 2 and 4 under APGD-L1, so the sweep shows the whole curve); MNIST's
#: 784 take 10, the budget of Tramer and Boneh 2019 and of Croce and Hein 2021; 3x32x32 images take
#: RobustBench's L1 budget 12 in the middle of a doubling sweep
DEFAULT_EPS: dict[str, dict[str, str]] = {
    "digits": {"linf": "0,0.05,0.1,0.15,0.2,0.3", "l2": "0,0.5,1,1.5,2", "l1": "0,0.5,1,2,4"},
    "mnist": {"linf": "0,0.1,0.2,0.3", "l2": "0,1,2,3", "l1": "0,2.5,5,10,15"},
    "fashion-mnist": {"linf": "0,0.05,0.1,0.2", "l2": "0,0.5,1,2", "l1": "0,2.5,5,10"},
    "*": {"linf": "0,2/255,4/255,8/255,16/255", "l2": "0,0.25,0.5,1", "l1": "0,3,6,12,24"},
}
#: attacks run for each norm when --attacks is not given
DEFAULT_ATTACKS: dict[str, str] = {"linf": "fgsm,pgd,apgd-ce", "l2": "pgd,apgd-ce(restarts=2),cw",
                                   "l1": "pgd,apgd-ce,apgd-t"}
#: attacks run for each norm by ``--eps curve`` when --attacks is not given: minimization attacks
CURVE_ATTACKS: dict[str, str] = {"linf": "fmn,fab", "l2": "fmn,ddn,fab", "l1": "fmn,fab"}

#: The shipped digits models that `robustness evaluate` without --model compares, by label
#: (their public names, also accepted by --model: digits-cnn and digits-cnn-at).
SHIPPED_MODELS: dict[str, Path] = {
    "standard": SHIPPED["digits-cnn"].path,
    "adv-trained": SHIPPED["digits-cnn-at"].path,
}
#: how the shipped adversarially trained model was made (also in its checkpoint's meta)
SHIPPED_AT_SCRIPT = "scripts/train_digits_cnn_at.sh"



class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line with exit code 2, and refuses an empty or blank
    value (``--eps "$UNSET"``) instead of taking it for the default."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"robustness: error: {message}{_suggest_choice(message)} (see `{self.prog} --help`)\n")
        raise SystemExit(2)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            if action.option_strings and isinstance(value, str) and not value.strip() and value != action.default:
                self.error(f"argument {'/'.join(action.option_strings)}: empty value (an unset shell variable?): "
                           "give a value, or leave the flag out for its default")
        return namespace, extras


def _suggest_choice(message: str) -> str:
    """`` (did you mean 'evaluate'?)`` for argparse's "invalid choice: 'evalute' (choose from ...)"."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return ""
    close = difflib.get_close_matches(found[1], re.findall(r"'([^']*)'", found[2]), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def split_attack_list(text: str) -> list[str]:
    """``"fgsm,art:DeepFool(max_iter=20,epsilon=1e-3),standard"`` -> three entries; an empty ``text``
    or an empty entry (``fgsm,,pgd``) is an :class:`InputError`.

    Commas inside parentheses belong to an entry's settings, and parentheses or commas inside
    quoted strings belong to the string. Registry and preset names (the text before ``(``) are
    lower-cased, settings never (``True``, ``None``, strings keep their case); ``art:`` entries
    keep their case (ART class names are CamelCase).
    """
    parts, depth, current, quote, escaped = [], 0, [], "", False
    for ch in text:
        if quote:  # inside a string: only its closing quote matters (not an escaped one)
            quote = "" if ch == quote and not escaped else quote
            escaped = ch == "\\" and not escaped
        elif ch in "'\"" and depth > 0:
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InputError(f"--attacks: unbalanced ')' in {text!r}")
        if ch == "," and depth == 0 and not quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quote:
        raise InputError(f"--attacks: unclosed string ({quote}) in {text!r}")
    if depth != 0:
        raise InputError(f"--attacks: unbalanced '(' in {text!r}")
    parts.append("".join(current))
    if not text.strip():
        raise InputError("--attacks is empty (an unset shell variable?): give attack names, e.g. --attacks fgsm,pgd")
    out = []
    for part in (p.strip() for p in parts):
        if not part:
            raise InputError(f"--attacks: empty item in {text!r} (a doubled or trailing comma?): give attack names "
                             "separated by single commas, e.g. --attacks fgsm,pgd")
        if part.lower().startswith("art:"):
            out.append(part)
        else:  # the name is case-insensitive; settings (True, False, strings) are kept as written
            head, paren, tail = part.partition("(")
            out.append(head.lower() + paren + tail)
    return out


#: --threat-model's values (RobustBench's spelling), by lower-cased name
_THREAT_MODELS = {"linf": "Linf", "l2": "L2", "corruptions": "corruptions"}
#: the --data names whose images take the model's input transform (resize/center-crop)
_IMAGENET_DATA = ("imagenet", "imagenet-c")


def _threat_model(text: str) -> str:
    """``--threat-model``, case-insensitive, in RobustBench's spelling (an unknown value is left for argparse)."""
    return _THREAT_MODELS.get(text.strip().lower(), text)


def _source_dataset(data: str) -> str | None:
    """The RobustBench dataset ``--data`` names: cifar10, cifar100, imagenet (or their -c variants); else None."""
    key = data.strip().lower()
    key = key[:-2] if key.endswith("-c") else key
    return key if key in ("cifar10", "cifar100", "imagenet") else None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robustness", description=(
        "Adversarial robustness testing harness for PyTorch. Without a command it runs `robustness evaluate` "
        "(with no arguments: the shipped digits models on the digits data). Exit codes: 0 ok, 1 a gate failed "
        "(--min-accuracy, --strict), 2 usage or input error, 3 internal error."),
        epilog="`robustness COMMAND --help` lists a command's options; `robustness --version` the version.")
    parser.add_argument("--version", action="version", version=f"robustness {_version()}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    ev = sub.add_parser("evaluate", help="robust accuracy per budget (the default command)")
    ev.add_argument("--model", default=None,
                    help=f"a model name ({', '.join(model_names())}: the shipped digits CNNs), checkpoint, "
                         "TorchScript file, robustbench:NAME (with --threat-model, --model-dir), timm:NAME (its "
                         "pretrained weights, e.g. timm:resnet50.a1_in1k), torchvision:NAME (its DEFAULT pretrained "
                         "weights, or --weights) or package.module:factory (default: both shipped digits CNNs, "
                         "standard and adversarially trained, side by side)")
    ev.add_argument("--arch", default=None,
                    help="architecture of a plain state-dict checkpoint: small-cnn, preact-resnet18, wrn-28-10, "
                         "torchvision:NAME or timm:NAME")
    ev.add_argument("--weights", default=None,
                    help="torchvision:NAME's weights: DEFAULT (the default), IMAGENET1K_V1, ... (or in full, "
                         "ResNet50_Weights.IMAGENET1K_V2); none: the untrained network")
    ev.add_argument("--threat-model", default=None, choices=list(_THREAT_MODELS.values()), type=_threat_model,
                    help="robustbench:NAME's threat model (default from --norm: linf -> Linf, l2 -> L2)")
    ev.add_argument("--model-dir", default=None,
                    help="where RobustBench keeps its model files (default: RobustBench's own, ./models)")
    ev.add_argument("--model-info", default=None,
                    help="a RobustBench model_info directory (model_info/<dataset>/<threat model>/<NAME>.json, from "
                         "its repository): its figures are the claims set beside ours, preferred over the leaderboard "
                         "tables of the installed robustbench")
    ev.add_argument("--mean", default=None,
                    help="per-channel normalization mean the model expects, e.g. 0.4914,0.4822,0.4465 "
                         "(our checkpoints record it; needed for plain state dicts and torchvision models)")
    ev.add_argument("--std", default=None, help="per-channel normalization std, with --mean")
    ev.add_argument("--data", default="digits",
                    help="digits (default), mnist, fashion-mnist, cifar10, cifar100, svhn, imagenet (the val set in "
                         "--data-dir), imagefolder:PATH, or a .npz/.pt file with x and y; cifar10-c, cifar100-c, "
                         "imagenet-c: accuracy per corruption and severity instead of attacks")
    ev.add_argument("--data-dir", default=None, help="where torchvision datasets live")
    ev.add_argument("--subset", default=None, choices=["robustbench"],
                    help="imagenet: RobustBench's fixed 5,000-image subset of the validation set")
    ev.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    ev.add_argument("--split", default="test", choices=["train", "test"])
    ev.add_argument("--attacks", default=None,
                    help="comma-separated registry names, each optionally with settings, e.g. "
                         "'fgsm,apgd-ce(steps=200,restarts=3)', presets (standard, plus, rand, standard-nofab, "
                         "smoke) and ART attacks "
                         "(art:DeepFool(max_iter=20)); see `robustness list attacks`. Default: "
                         "fgsm,pgd,apgd-ce for linf, pgd,apgd-ce(restarts=2),cw for l2 and pgd,apgd-ce,apgd-t for l1")
    ev.add_argument("--eps", default=None,
                    help="comma-separated budgets, fractions allowed: 0,2/255,8/255; 'curve' (alone or among them: "
                         "curve,0,0.1,0.2) measures the robustness curve with the minimization attacks (default "
                         "attacks then: fmn,fab for linf and l1, fmn,ddn,fab for l2)")
    ev.add_argument("--norm", default=None, choices=list(NORMS), type=str.lower,
                    help="default: linf, and with no --attacks/--eps also an l2 sweep")
    ev.add_argument("--n", type=int_type(1), default=None, help="evaluate a seeded random subset of n examples")
    ev.add_argument("--batch-size", type=_batch_size, default=None,
                    help="examples per batch, or auto (the default): on a GPU the largest that fits, found by "
                         "halving from 4096 on an out-of-memory error; 256 on the CPU")
    ev.add_argument("--state", default=None,
                    help="directory recording every finished batch: run the same command again after a crash or "
                         "kill to resume where it stopped (same model, data and settings)")
    ev.add_argument("--amp", default=None, choices=["bf16"],
                    help="run the model under bfloat16 autocast (faster on recent GPUs; the README gives its "
                         "effect on attack strength)")
    ev.add_argument("--channels-last", action="store_true", help="run the model in channels_last memory format")
    ev.add_argument("--compile", action="store_true", help="torch.compile the model for the evaluation")
    ev.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    ev.add_argument("--seed", type=parse_seed, default=0)
    ev.add_argument("--out", default="robustness-report", help="directory for report.json, report.md and the plot")
    ev.add_argument("--format", default="report", choices=["report", "robustbench"], type=str.lower,
                    help="robustbench: also write robustbench.json, the entry in RobustBench's leaderboard format "
                         "(Linf and L2 only; warns where the run is not the leaderboard's protocol)")
    ev.add_argument("--min-accuracy", type=float_type("a fraction in [0, 1] (0.4 means 40%)", lambda v: 0 <= v <= 1),
                    default=None,
                    help="exit 1 if the worst-case robust accuracy at the largest budget is below this (0..1)")
    ev.add_argument("--schedule", default="ascending", choices=["ascending", "bisect"],
                    help="how fixed-budget attacks visit the budgets: ascending (warm-started, strongest; default) "
                         "or bisect (about log2(budgets+1) attacks per sample: faster on long sweeps)")
    ev.add_argument("--strict", action="store_true",
                    help="a sanity check that warns fails instead, and a failed check exits 1 (a CI gate)")
    ev.add_argument("--no-checks", action="store_true", help="skip the sanity checks (not recommended)")
    ev.add_argument("--cascade", action=argparse.BooleanOptionalAction, default=None,
                    help="run each attack only on the samples the earlier ones left robust (cheaper; the per-attack "
                         "columns become cumulative). Default: the preset's (standard, plus, rand and "
                         "standard-nofab cascade; smoke and attack lists do not)")
    talk = ev.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help="no progress bars or logs; one line per sweep")
    talk.add_argument("--verbose", action="store_true",
                      help="also show ART's log lines and the loader's notes (hidden by default)")
    add_corruption_flags(ev)
    add_nproc(ev, "evaluates its share of the batches; rank 0 gathers them, runs the checks and writes the report")
    _add_train_parser(sub)
    ls = sub.add_parser("list", help="list registered plug-ins (attacks: norms, kind, settings and defaults)")
    ls.add_argument("what", choices=["attacks"])
    add_compare_parser(sub)
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    return parser


@dataclass(frozen=True)
class _Sweep:
    norm: str
    attacks: list[str]
    epsilons: list[float]
    labels: dict[float, str] = field(default_factory=dict)  # budgets typed as fractions, as typed
    curve: bool = False  # 'curve' was among --eps


def _split_curve(text: str) -> tuple[bool, str | None]:
    """``--eps curve,0,0.1`` -> ``(True, "0,0.1")``; ``curve`` alone -> ``(True, None)``; no ``curve``:
    ``(False, text)``. Empty items are left for the budget parser's error."""
    parts = text.split(",")
    rest = [p for p in parts if p.strip().lower() != "curve"]
    if len(rest) == len(parts):
        return False, text
    return True, (",".join(rest) if rest else None)


def _sweeps(args: argparse.Namespace, dataset: str) -> list[_Sweep]:
    """The sweeps to run: ``--eps`` and ``--attacks`` when given (empty ones are errors, never the defaults)."""
    table = DEFAULT_EPS.get(dataset, DEFAULT_EPS["*"])
    given = args.attacks is not None or args.eps is not None
    norms = [args.norm] if args.norm else (["linf"] if given else ["linf", "l2"])
    out = []
    for norm in norms:
        curve, eps = _split_curve(args.eps) if args.eps is not None else (False, table[norm])
        defaults = CURVE_ATTACKS if curve else DEFAULT_ATTACKS
        names = split_attack_list(args.attacks if args.attacks is not None else defaults[norm])
        if eps is None:
            out.append(_Sweep(norm, names, [], {}, curve=True))
        else:
            out.append(_Sweep(norm, names, parse_epsilons(eps), epsilon_labels(eps), curve=curve))
    return out


def _batch_size(text: str) -> int | None:
    """``--batch-size``: a positive integer below 2**63, or ``auto`` (``None``: the runner chooses)."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {text!r}") from None
    if not 1 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"expected a positive integer below 2**63, or auto, got {text!r}")
    return value


def _state_dir(state: str | None, label: str | None, norm: str, several: bool) -> Path | None:
    """One state directory per evaluation: ``STATE/<model>/<norm>`` when the command runs several."""
    if state is None:
        return None
    if not several:
        return Path(state)
    return Path(state) / (label or "model") / norm


def _floats(text: str | None, flag: str) -> list[float] | None:
    return None if text is None else parse_floats(text, flag)


def _attack_norms(name: str) -> list[str]:
    """The norms the registered attack ``name`` builds for with its default settings."""
    out = []
    for norm in NORMS:
        try:
            ATTACKS.create(name, norm=norm)
        except Exception:  # noqa: BLE001 - any plug-in's refusal (InputError, ValueError, ...) means "not this norm"
            continue
        out.append(norm)
    return out


def _check_attacks(sweep: _Sweep, norm_given: bool) -> None:
    """Every attack of ``sweep`` builds for its norm; a registered attack that lacks the norm gets
    a message in the CLI's words (``--norm l2``), not the attack class's (``norm='l2'``)."""
    for spec in sweep.attacks:
        name = spec.partition("(")[0].strip()
        if name.startswith("art:") or name not in ATTACKS:
            continue
        norms = _attack_norms(name)
        if norms and sweep.norm not in norms:
            others = [n for n in ATTACKS.list() if sweep.norm in _attack_norms(n)]
            raise InputError(
                f"--attacks {name}: {name} is an {' and '.join(norms)} attack and this sweep is {sweep.norm}"
                f"{'' if norm_given else ' (the default --norm)'}: add --norm {norms[0]}, or use an {sweep.norm} "
                f"attack ({', '.join(others)})")
    named = runner.resolve_attacks(sweep.attacks, sweep.norm)  # unknown names and settings: the runner's messages
    if sweep.curve:
        check_curve_attacks(named, [e for e in sweep.epsilons if e > 0], sweep.norm)


def _check_evaluate(args: argparse.Namespace) -> None:
    """Everything about ``evaluate``'s flags that needs no data or model: checked before any work,
    and before ``--nproc`` starts its workers (a bad attack is then one line, not a failed launch)."""
    if args.strict and args.no_checks:
        raise InputError("--strict needs the sanity checks (it fails on their warnings) and --no-checks skips "
                         "them: drop one")
    if (args.mean is None) != (args.std is None):
        raise InputError("--mean and --std go together: give both (the model's per-channel normalization), "
                         "or neither")
    if args.model is None and any(v is not None for v in (args.arch, args.mean, args.std)):
        raise InputError("--arch, --mean and --std describe a --model: the shipped models record theirs; drop them "
                         "or pass --model")
    prefix = source_prefix(args.model) if args.model is not None else None
    if args.weights is not None and (prefix != "torchvision" or args.arch is not None):
        raise InputError(f"--weights {args.weights!r} names the weights of a --model torchvision:NAME (DEFAULT, "
                         "IMAGENET1K_V1, ..., none); drop it for other models")
    for flag, value in (("--threat-model", args.threat_model), ("--model-dir", args.model_dir),
                        ("--model-info", args.model_info)):
        if value is not None and prefix != "robustbench":
            raise InputError(f"{flag} {value!r} describes a --model robustbench:NAME; drop it for other models")
    if args.model_dir is not None and not args.model_dir.strip():
        raise InputError("--model-dir is empty: give RobustBench's model directory, or drop it")
    if args.model_info is not None and not (args.model_info.strip()
                                            and Path(args.model_info.strip()).expanduser().is_dir()):
        raise InputError(f"--model-info {args.model_info!r} is not a directory: give RobustBench's model_info "
                         "directory (model_info/<dataset>/<threat model>/<NAME>.json), or drop it")
    if args.subset is not None and args.data.strip().lower() not in _IMAGENET_DATA:
        raise InputError(f"--subset {args.subset} selects images of --data imagenet; drop it for --data {args.data}")
    _floats(args.mean, "--mean")
    _floats(args.std, "--std")
    parse_device(args.device)
    for sweep in _sweeps(args, args.data):
        with naming("--attacks", ",".join(sweep.attacks)):
            _check_attacks(sweep, norm_given=args.norm is not None)
        if sweep.curve and args.min_accuracy is not None and not any(e > 0 for e in sweep.epsilons):
            raise InputError("--min-accuracy gates the worst case at the largest listed budget and --eps curve lists "
                             "none: list budgets with the curve, e.g. --eps curve,0,0.3")
        if args.format == "robustbench":
            _check_robustbench_format(sweep)
    if not _torchrun_rank():
        _check_out(Path(args.out))
        if args.state is not None:
            check_writable(Path(args.state), "--state")


def _check_robustbench_format(sweep: _Sweep) -> None:
    """``--format robustbench`` needs a norm RobustBench ranks and a budget above 0 (checked before any work)."""
    from robustness.leaderboard_entry import THREAT_MODELS

    if sweep.norm not in THREAT_MODELS:
        raise InputError(f"--format robustbench: RobustBench ranks Linf and L2 robustness, not {sweep.norm}: use "
                         "--norm linf or --norm l2, or drop --format robustbench")
    if not any(e > 0 for e in sweep.epsilons):
        raise InputError("--format robustbench needs a budget above 0 (a leaderboard entry is the accuracy at one "
                         "budget): add one to --eps, e.g. --eps 0,8/255")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robustness-harness")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _evaluate(args: argparse.Namespace) -> int:
    if (code := maybe_evaluate(args)) is not None:  # --data cifar10-c, ...: accuracy per corruption and severity
        return code
    _check_evaluate(args)
    with torchrun_session(parse_device(args.device)) as (device, group):  # under torchrun: this rank's device
        torch.manual_seed(args.seed)
        imagenet = args.data.strip().lower() in _IMAGENET_DATA
        first = None
        if imagenet and args.model is not None:  # the images are resized/cropped as the model's weights declare
            first = _load_model(args)
        extra: dict[str, Any] = {}
        if imagenet:  # keywords of the imagenet data source only
            extra = {"input_transform": first.input_transform if first is not None else None, "subset": args.subset}
        with naming("--data", args.data):
            data = datasets.load_dataset(args.data, split=args.split, data_dir=args.data_dir,
                                         download=args.download, n=args.n, seed=args.seed, **extra)
        models: list[tuple[str | None, loading.LoadedModel]]
        threads = torch.get_num_threads()
        if args.model is None:
            models = _shipped_models()
            # the shipped 8x8 CNNs are tiny: one thread beats several (by 20x on a busy 2-core machine)
            torch.set_num_threads(1)
        elif first is not None:
            with naming("--model", args.model):
                loading.check_data_fits(first, min_classes=data.num_classes, in_channels=data.input_shape[0],
                                        input_shape=data.input_shape)
            models = [(None, first)]
        else:
            models = [(None, _load_model(args, data))]
        try:
            return _run_sweeps(args, data, models, device, rank=None if group is None else group.rank)
        finally:
            torch.set_num_threads(threads)


def _load_model(args: argparse.Namespace, data: datasets.LoadedData | None = None) -> loading.LoadedModel:
    """``--model`` with the flags that describe it, checked against ``data`` (``None``: checked later)."""
    with naming("--model", args.model):
        return loading.load_model(
            args.model, arch=args.arch, mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"),
            min_classes=data.num_classes if data is not None else None,
            in_channels=data.input_shape[0] if data is not None else None,
            input_shape=data.input_shape if data is not None else None,
            dataset=_source_dataset(args.data), threat_model=args.threat_model, norm=args.norm,
            model_dir=args.model_dir, model_info_dir=args.model_info, weights=args.weights)


def _eval_config(args: argparse.Namespace, sweep: _Sweep, bounds: tuple[float, float], device: torch.device, *,
                 state: Path | None, distributed: bool) -> EvalConfig:
    """The settings of one evaluation: the one place where ``evaluate``'s flags become an :class:`EvalConfig`
    (``bounds`` come from the data, ``device`` and ``distributed`` from ``--device`` and torchrun)."""
    return EvalConfig(
        attacks=tuple(sweep.attacks), epsilons=(["curve"] if sweep.curve else []) + sweep.epsilons, norm=sweep.norm,
        bounds=bounds,
        batch_size=args.batch_size, device=device, seed=args.seed, progress=not args.quiet,
        checks=not args.no_checks, strict=args.strict, schedule=args.schedule, state=state, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile, distributed=distributed, cascade=args.cascade,
    )


def _run_sweeps(args: argparse.Namespace, data: datasets.LoadedData,
                models: list[tuple[str | None, loading.LoadedModel]], device: torch.device,
                rank: int | None = None) -> int:
    """Every sweep of every model; ``rank`` (under torchrun): shard over the process group, and
    only rank 0 writes reports and prints (every rank returns the same exit code)."""
    sweeps = _sweeps(args, data.name)
    width = data.bounds[1] - data.bounds[0]
    numel = math.prod(data.input_shape)
    for sweep in sweeps:
        diameter = box_diameter(sweep.norm, width, numel)  # the distance between opposite corners
        top = max(sweep.epsilons, default=0.0)
        typed = sweep.labels.get(top, format_eps(top))
        if sweep.norm == "linf" and top >= width:
            warnings.warn(f"--eps {typed} in Linf covers the whole input range {list(data.bounds)}: any "
                          f"input can become any image, so robust accuracy is 0 by construction; for 0-255 "
                          f"pixel units write the budget as a fraction, e.g. 8/255", RobustnessWarning, stacklevel=2)
        elif sweep.norm in ("l2", "l1") and top >= diameter:
            warnings.warn(f"--eps {typed} in {sweep.norm.upper()} is at least the distance between any two inputs "
                          f"of shape {tuple(data.input_shape)} in {list(data.bounds)} ({diameter:.4g}): any input can "
                          f"become any image, so robust accuracy is 0 by construction; for 0-255 pixel units divide "
                          f"the budget by 255", RobustnessWarning, stacklevel=2)
    failed, saved = False, 0
    for sweep in sweeps:
        results: list[tuple[str | None, Report, Path, bool]] = []
        for label, loaded in models:
            state = _state_dir(args.state, label, sweep.norm, len(models) * len(sweeps) > 1)
            config = _eval_config(args, sweep, data.bounds, device, state=state, distributed=rank is not None)
            with _model_may_not_exit("while it was evaluated"):
                report = runner.evaluate(loaded.model, data.dataset, config=config)
            report.epsilon_labels = dict(sweep.labels)
            report.model = loaded.info  # the weights' SHA-256, normalization, initial weights, file checks
            report.warnings += [w for w in loaded.warnings if w not in report.warnings]
            is_file = Path(args.data).suffix.lower() in (".npz", ".pt")  # a file has no splits
            described = getattr(data, "description", None)  # imagenet: subset and resize/crop
            report.data = described or (data.name if is_file else f"{data.name}, {args.split} split")
            report.set_published()  # the model block's claims (loaded.claims) beside ours, loud where they disagree
            if label is not None:
                out = Path(args.out) / label / sweep.norm
            else:
                out = Path(args.out) / sweep.norm if len(sweeps) > 1 else Path(args.out)
            gate = args.min_accuracy is not None and report.worst_case < args.min_accuracy
            failed |= gate or bool(report.failed_checks)
            results.append((label, report, out, gate))
        if rank:
            continue
        if len(results) == 1 and results[0][0] is None:  # printed first: a failing save loses nothing shown
            _print(results[0][1], results[0][2], args, results[0][3])
        else:
            _print_side_by_side(results, sweep, args)
        for _, report, out, _ in results:
            report.save(out)
            if args.format == "robustbench":
                _write_robustbench(report, out, args)
            saved += 1
    if not rank and (saved == 0 or saved != len(sweeps) * len(models)):  # never exit 0 (or 1) without the reports
        raise RuntimeError(f"{saved} of {len(sweeps) * len(models)} reports were written")
    if not rank and args.model is None and not args.quiet:  # the Quickstart: its reports side by side, later
        print(f"\ncompare saved reports: robustness compare {args.out}")
    return 1 if failed else 0


def _write_robustbench(report: Report, out: Path, args: argparse.Namespace) -> None:
    """``--format robustbench``: robustbench.json beside the report, a warning for each way the run differs from
    the leaderboard's protocol (they are the entry's footnote too)."""
    from robustness.leaderboard_entry import write_robustbench

    path, problems = write_robustbench(report, out)
    for problem in problems:
        warnings.warn(f"robustbench.json: {problem}", RobustnessWarning, stacklevel=2)
    if not args.quiet:
        print(f"robustbench entry ({'not the leaderboard protocol: see its footnote' if problems else 'standard'}) "
              f"-> {path}")


@contextmanager
def _model_may_not_exit(when: str) -> Iterator[None]:
    """The model's code calling ``sys.exit`` (``SystemExit``) ``when`` is an input error: it would otherwise
    end the command with the model's exit code (0: a CI gate that passed without an evaluation)."""
    try:
        yield
    except SystemExit as e:
        raise InputError(f"the model's code called sys.exit({e.code!r}) {when}: a model must return logits, "
                         "never exit; no report was written") from None


def _check_out(out: Path) -> None:
    """``--out`` must be a directory we can write into (or create): checked before any work is done by
    creating and removing a probe file (:func:`~robustness.cli.common.check_writable`), without creating
    a directory (an input error later leaves no empty directory behind)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory: give a directory for the report files")
    check_writable(out, "--out")


def _shipped_models() -> list[tuple[str | None, loading.LoadedModel]]:
    """The shipped standard and adversarially trained digits models, labelled."""
    at_path = SHIPPED_MODELS["adv-trained"]
    if not at_path.is_file():
        raise InputError(
            f"the shipped adversarially trained model {at_path} is missing from this installation: recreate it "
            f"with `sh {SHIPPED_AT_SCRIPT}` or reinstall the package (or pass --model)"
        )
    return [("standard", loading.default_model()), ("adv-trained", loading.load_model(str(at_path)))]


def _summary_line(report: Report, out: Path, args: argparse.Namespace, gate: bool, label: str | None = None) -> str:
    """One line per evaluation: clean and worst-case accuracy, size, time, where it went, what failed."""
    top = report.eps_label(max(report.robust_accuracy))
    worst = (f"worst case at eps={top}: {100 * report.worst_case:.1f}%" if max(report.robust_accuracy) > 0
             else "no budget listed (curve only)")
    line = (f"{label + ': ' if label else ''}{report.norm}: clean {100 * report.clean_accuracy:.1f}%, "
            f"{worst} ({report.n_examples} examples, {report.timings['total']:.1f} s) -> {out}")
    if report.model is not None and report.model.initial_weights:
        line += "  UNTRAINED: initial random weights"
    if gate:
        line += f"  FAILED --min-accuracy {args.min_accuracy}"
    if report.failed_checks:
        line += f"  FAILED checks: {', '.join(c.name for c in report.failed_checks)}"
    warned = [c.name for c in report.checks if c.status == "warning"]
    if warned:
        line += f"  {len(warned)} check warning{'s' if len(warned) > 1 else ''}: {', '.join(warned)} (see report.md)"
    if report.curve is not None:
        line += f"\n  {label + ': ' if label else ''}{report.curve_summary()}"
    return line


def _print(report: Report, out: Path, args: argparse.Namespace, gate: bool) -> None:
    line = _summary_line(report, out, args, gate)
    if not args.quiet:
        print(f"\n{report.model.label if report.model else 'model'} on {report.data}, {report.norm} sweep")
        _print_checks(report, None)
        print_report_body(report, args)
        if report.curve_table():
            print(report.curve_table())
    print(line)


def _print_checks(report: Report, label: str | None) -> None:
    """The checks that did not pass, failed first, one line each."""
    who = f" ({label})" if label else ""
    for c in report.checks_by_severity():
        if c.status in ("failed", "warning"):
            print(f"check {c.status}{who}: {c.name}: {c.message}")


def _print_side_by_side(results: list[tuple[str | None, Report, Path, bool]], sweep: _Sweep,
                        args: argparse.Namespace) -> None:
    """One table for a sweep: worst-case robust accuracy per budget, one column per model."""
    labels = [str(label) for label, *_ in results]
    if not args.quiet:
        first = results[0][1]
        print(f"\n{' vs '.join(labels)} on {first.data}, {sweep.norm} sweep "
              f"({', '.join(sweep.attacks)}): worst-case robust accuracy")
        for label, report, _, _ in results:
            _print_checks(report, label)
            for w in report.warnings:
                if w not in getattr(args, "shown_warnings", ()):
                    print(f"warning ({label}): {w}")
        print("| eps | " + " | ".join(labels) + " |")
        print("|" + "---:|" * (1 + len(labels)))
        labels_of = eps_labels([e for _, r, _, _ in results for e in r.robust_accuracy], sweep.labels)
        for eps in sorted(first.robust_accuracy):
            cells = [f"{100 * r.robust_accuracy[eps]:.1f}%" if eps in r.robust_accuracy else "-"
                     for _, r, _, _ in results]
            print(f"| {labels_of[eps]} | " + " | ".join(cells) + " |")
        for label, report, _, _ in results:
            if report.curve is not None and report.curve.gap:
                print(f"\n{label}: robustness curve at the listed budgets\n{report.curve_table()}")
    for label, report, out, gate in results:
        print(_summary_line(report, out, args, gate, label))


def _settings(cls: Any) -> str:
    """``cls``'s settings with their defaults, as ``--attacks`` writes them (``steps=10, loss='ce'``),
    from its dataclass fields; ``norm`` is left out (``--norm`` sets it)."""
    if not dataclasses.is_dataclass(cls):
        doc = (cls.__doc__ or "").strip().splitlines()
        return f"(not a dataclass) {doc[0] if doc else ''}".rstrip()
    shown = []
    for field in dataclasses.fields(cls):
        if not field.init or field.name == "norm":
            continue
        if field.default is not dataclasses.MISSING:
            shown.append(f"{field.name}={field.default!r}")
        elif field.default_factory is not dataclasses.MISSING:
            shown.append(f"{field.name}={field.default_factory()!r}")
        else:
            shown.append(f"{field.name} (required)")
    return ", ".join(shown) or "(none)"


def _list(args: argparse.Namespace) -> int:
    print(f"{'attack':10s} {'norms':11s} {'kind':13s} settings, with their defaults")
    for name in ATTACKS.list():
        cls = ATTACKS.load(name)
        kind = getattr(cls, "kind", None)
        head = f"{name:10s} {','.join(_attack_norms(name)) or '?':11s} {kind if isinstance(kind, str) else '?':13s} "
        print(textwrap.fill(_settings(cls), width=110, initial_indent=head, subsequent_indent=" " * len(head),
                            break_on_hyphens=False, break_long_words=False))
    print("\npresets (usable wherever an attack list is; settings per norm):")
    for name, preset in sorted(PRESETS.items()):
        print(f"{name} ({'cascaded' if preset.cascade else 'not cascaded'} by default): {preset.description}")
        for norm, entries in preset.by_norm.items():
            head = f"  {'any norm' if norm == '*' else norm:9s}"
            text = ", ".join(n + (f"({', '.join(f'{k}={v}' for k, v in kw.items())})" if kw else "") for n, kw in entries)
            print(textwrap.fill(text, width=110, initial_indent=head, subsequent_indent=" " * len(head),
                                break_on_hyphens=False, break_long_words=False))
    print("\nany ART evasion attack: art:Name(setting=value, ...), e.g. art:ProjectedGradientDescent(max_iter=20)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m robustness -- evaluate --n 100`: keeps --n from torchrun's parser
        argv = argv[1:]
    if argv[:1] in (["-h"], ["--help"]):  # the overview of the subcommands, not evaluate's flags
        build_parser().print_help()
        return 0
    if argv[:1] == ["--version"]:
        print(f"robustness {_version()}")
        return 0
    debug = False
    while argv[:1] == ["--debug"]:  # `robustness --debug list attacks`: global, before the command
        debug, argv = True, argv[1:]
    if not argv or argv[0].startswith("-"):
        argv = ["evaluate", *argv]
    if debug:
        argv = [argv[0], "--debug", *argv[1:]]
    args = build_parser().parse_args(argv)
    args.argv = argv
    quiet = getattr(args, "quiet", False)
    rank = _torchrun_rank()  # under torchrun, rank 0 speaks for every rank
    logging.basicConfig(level=logging.ERROR if rank else logging.WARNING if quiet else logging.INFO,
                        format="%(message)s")
    _set_log_levels(verbose=getattr(args, "verbose", False) and not rank)
    args.shown_warnings = set()
    with warnings.catch_warnings():
        if rank:
            warnings.simplefilter("ignore")
        warnings.showwarning = _one_line_warning(args.shown_warnings)
        code, message = _dispatch(args)
    from robustness.cli.launch import record_exit

    if not record_exit(code, message) and message is not None:  # a --nproc launcher prints it once itself
        sys.stderr.write(f"robustness: error{f' (rank {rank})' if rank else ''}: {message}\n")
    return code


def _set_log_levels(*, verbose: bool) -> None:
    """ART logs at INFO what it does on import (``set ART_DATA_PATH``) and per attack (``Inferred 1 hidden
    layers``), and the loader notes at DEBUG what it did not pass to a factory: hidden unless ``verbose``.
    The command's own settings, replaced on every call (a second ``main`` in one process starts afresh)."""
    logging.getLogger("art").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("robustness").setLevel(logging.DEBUG if verbose else logging.NOTSET)


def _one_line_warning(shown: set[str]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints each distinct message once, as ``warning: ...``."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        text = str(message)
        if text not in shown:
            shown.add(text)
            sys.stderr.write(f"warning: {text}\n")
    return show


def _dispatch(args: argparse.Namespace) -> tuple[int, str | None]:
    """The command's exit code, and the message of an input error."""
    try:
        nproc = getattr(args, "nproc", None)
        if nproc is not None and nproc != 1:
            from robustness.cli.launch import relaunch

            if args.command == "evaluate":  # a bad flag is one line here, not a failed launch of K workers
                _check_evaluate(args)
            return relaunch(args.argv, nproc), None
        if args.command == "list":
            return _list(args), None
        if args.command == "train":
            return _train(args), None
        if args.command == "compare":
            return run_compare(args), None
        return _evaluate(args), None
    except InputError as e:
        return 2, str(e)
    except CollectiveError as e:  # another rank failed first (torchrun): one line, and never 1 (the gate's code)
        return 3, str(e)
    except BrokenPipeError:  # `robustness list attacks | head`: the reader left; say nothing, like a Unix tool
        try:  # Python's own flush of stdout at exit would raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a real file (captured, closed): nothing to flush there
            pass
        return 128 + 13, None  # 13 = SIGPIPE
    except OSError as e:  # an unwritable --out/--state, a full disk, ...: the user's to fix, no traceback
        return 2, _os_error_message(e)
    except KeyboardInterrupt:
        sys.stderr.write("robustness: interrupted\n")
        return 130, None
    except BaseException as e:  # a bug, an unforeseen input, or a SystemExit from code we called: never 0 or 1
        if getattr(args, "debug", False):
            raise
        if isinstance(e, SystemExit):
            return 3, (f"internal error: code the command ran called sys.exit({e.code!r}); the command did not "
                       "finish (rerun with --debug for the traceback)")
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        return 3, (f"internal error: {type(e).__name__}: {first} (rerun with --debug for the traceback, and "
                   "please report it)")


def _os_error_message(e: OSError) -> str:
    """``OSError`` -> one line naming the path and what to do."""
    what = e.strerror or str(e) or type(e).__name__
    if not e.filename:
        return f"{what} ({type(e).__name__})"
    return (f"cannot use {e.filename}: {what} (check that the path exists and is writable by you, and that the "
            f"disk has room; use --out/--state to write elsewhere)")


def _torchrun_rank() -> int:
    """This process's rank under torchrun (0 outside it, or when the variable is unreadable)."""
    try:
        return int(os.environ.get("RANK", "0")) if "WORLD_SIZE" in os.environ else 0
    except ValueError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
