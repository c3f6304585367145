"""A report as an entry of RobustBench's leaderboard: the ``model_info`` JSON a submission adds.

RobustBench keeps one JSON file per model (``model_info/<dataset>/<threat model>/<Name>.json``) with the
paper's fields and the accuracies as percentage strings::

    {"link": null, "name": null, "authors": null, "additional_data": null, "number_forward_passes": 1,
     "dataset": "cifar10", "venue": null, "architecture": "WideResNet-28-10", "eps": "8/255",
     "clean_acc": "89.69", "reported": null, "autoattack_acc": "59.53", "footnote": null}

:func:`robustbench_entry` fills what the report knows (dataset, budget, accuracies, architecture) and leaves
``null`` what only the authors know (``link``, ``name``: the paper's title, ``authors``, ``venue``,
``additional_data``, ``reported``: the paper's own robust accuracy). A run that cannot be an entry at all
(a norm RobustBench does not rank, no budget above 0) is refused (:class:`~robustness.errors.InputError`).
A run that can, but not as the leaderboard measures (attacks other than AutoAttack's standard version,
another budget, fewer examples than the full test set, data that is not a leaderboard's, bf16 autocast,
sanity checks that did not pass) is returned with warnings, which also become the entry's ``footnote``: such
an entry is not comparable with the leaderboard's rows as it stands.

Example::

    entry, problems = robustbench_entry(report)
    path, problems = write_robustbench(report, "robustness-report")   # robustness-report/robustbench.json
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.claims import budget_text
from robustness.errors import InputError
from robustness.io import atomic_write_text, json_text

if TYPE_CHECKING:
    from robustness.corruption_report import CorruptionReport
    from robustness.report import Report

__all__ = ["FILENAME", "LEADERBOARD_BUDGETS", "LEADERBOARD_EXAMPLES", "THREAT_MODELS", "corruptions_entry",
           "robustbench_entry", "write_robustbench"]

#: the file ``--format robustbench`` writes beside report.json
FILENAME = "robustbench.json"
#: RobustBench's threat model per norm of this package
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}
#: the leaderboards RobustBench keeps, and their budget: (dataset, norm) -> eps
LEADERBOARD_BUDGETS: dict[tuple[str, str], float] = {
    ("cifar10", "linf"): 8 / 255, ("cifar10", "l2"): 0.5, ("cifar100", "linf"): 8 / 255,
    ("imagenet", "linf"): 4 / 255,
}
#: the examples a leaderboard evaluation uses: the CIFAR test sets, RobustBench's ImageNet subset
LEADERBOARD_EXAMPLES = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}
#: the attack preset that is the leaderboard's protocol
STANDARD_PRESET = "standard"


def _dataset(report: Report) -> str | None:
    """The report's dataset as RobustBench names it (``cifar10``, ``cifar100``, ``imagenet``), else as written."""
    for text in (report.data, report.model.dataset if report.model is not None else None):
        if text:
            head = re.split(r"[\s,(]", str(text).strip().lower(), maxsplit=1)[0]
            key = head.replace("-", "").replace("_", "")
            return {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet"}.get(key, head)
    return None


def _standard_attacks(norm: str) -> dict[str, str]:
    """The attacks (report names and settings) of AutoAttack's standard version for ``norm``, as a report lists them."""
    from robustness.config import EvalConfig

    return EvalConfig(attacks=STANDARD_PRESET, epsilons=[0.0], norm=norm).attack_descriptions()


def _attack_problems(report: Report) -> list[str]:
    standard = _standard_attacks(report.norm)
    missing = [n for n, d in standard.items() if report.attacks.get(n) != d]
    extra = [n for n in report.attacks if n not in standard]
    if not missing and not extra:
        return []
    if not missing:
        return [f"attacks beyond AutoAttack's standard version ran too ({', '.join(extra)}): the robust accuracy is "
                "at most the standard protocol's, not the leaderboard's measurement"]
    return [f"the attacks ({', '.join(report.attacks) or 'none'}) are not AutoAttack's standard version (--attacks "
            f"{STANDARD_PRESET}: {', '.join(standard)}; missing or with other settings: {', '.join(missing)}), so the "
            "robust accuracy may be higher than the leaderboard's protocol would give"]


def _budget(report: Report, dataset: str | None) -> tuple[float, list[str]]:
    """The budget the entry reports (the leaderboard's when measured, else the largest) and why it is not the
    leaderboard's."""
    budgets = sorted(e for e in report.robust_accuracy if e > 0)
    if not budgets:
        raise InputError("--format robustbench needs a budget above 0 (a leaderboard entry is the accuracy at one "
                         "budget): add one to --eps, e.g. --eps 0,8/255")
    board = LEADERBOARD_BUDGETS.get((dataset or "", report.norm))
    if board is None:
        boards = ", ".join(f"{d} {THREAT_MODELS[n]}" for d, n in LEADERBOARD_BUDGETS)
        return budgets[-1], [f"RobustBench keeps no leaderboard for {dataset or 'this data'} in "
                             f"{THREAT_MODELS[report.norm]} (it ranks {boards})"]
    hit = next((e for e in budgets if math.isclose(e, board, rel_tol=1e-6)), None)
    if hit is not None:
        return hit, []
    return budgets[-1], [f"the budget {budget_text(budgets[-1])} is not the leaderboard's {budget_text(board)} for "
                         f"{dataset} {THREAT_MODELS[report.norm]}: evaluate with --eps 0,{budget_text(board)}"]


def robustbench_entry(report: Report) -> tuple[dict[str, Any], list[str]]:
    """``report`` as RobustBench's ``model_info`` JSON (see the module docstring), and the reasons it is not a
    leaderboard measurement (empty when it is one; they are the entry's ``footnote`` too).

    Raises :class:`~robustness.errors.InputError` for a norm RobustBench does not rank (only Linf and L2) or a
    report without a budget above 0.
    """
    if report.norm not in THREAT_MODELS:
        raise InputError(f"--format robustbench: RobustBench ranks Linf and L2 robustness (and common corruptions), "
                         f"not {report.norm}: use --norm linf or --norm l2, or drop --format robustbench")
    dataset = _dataset(report)
    eps, problems = _budget(report, dataset)
    problems += _attack_problems(report)
    wanted = LEADERBOARD_EXAMPLES.get(dataset or "")
    if wanted is not None and report.n_examples < wanted:
        problems.append(f"{report.n_examples} examples, fewer than the leaderboard's {wanted:,} on {dataset}: the "
                        "accuracies carry more sampling noise and may differ from the full test set's")
    if report.speedups.get("amp"):
        problems.append(f"the model ran under {report.speedups['amp']} autocast, which can weaken attacks")
    not_passed = [c.name for c in report.checks if c.status in ("failed", "warning")]
    if not_passed:
        problems.append(f"sanity checks did not pass ({', '.join(not_passed)}): see report.md")
    model = report.model
    architecture = None
    if model is not None:
        architecture = model.arch or model.name
    entry = {
        "link": None,
        "name": None,  # RobustBench's "name" is the paper's title: the authors fill it
        "authors": None,
        "additional_data": None,
        "number_forward_passes": 1 if not report.defenses else None,
        "dataset": dataset,
        "venue": None,
        "architecture": architecture,
        "eps": budget_text(eps),
        "clean_acc": _percent(report.clean_accuracy),
        "reported": None,
        "autoattack_acc": _percent(report.robust_accuracy[eps]),
        "footnote": ("Not RobustBench's protocol: " + "; ".join(problems) + ".") if problems else None,
    }
    return entry, problems


def _percent(value: float) -> str | None:
    """A fraction as RobustBench writes accuracies: ``0.8969`` -> ``"89.69"``."""
    return None if value is None or math.isnan(value) else f"{100 * value:.2f}"


def corruptions_entry(report: CorruptionReport) -> tuple[dict[str, Any], list[str]]:
    """A corruption report (:mod:`robustness.corruption_report`) as RobustBench's ``corruptions`` entry
    (``corruptions_acc``: the mean accuracy over the corruptions and severities), and the reasons it is not
    the leaderboard's measurement (fewer corruptions, severities or examples than RobustBench's; no clean
    accuracy), which are the entry's ``footnote`` too. ``corruptions_mce`` (ImageNet's error relative to
    AlexNet's) is left ``null``."""
    from robustness.corruptions import CORRUPTIONS, SEVERITIES

    dataset = report.dataset.lower().removesuffix("-c").replace("-", "")
    problems = []
    missing = [c for c in CORRUPTIONS if c not in report.accuracy]
    if missing:
        problems.append(f"{len(missing)} of RobustBench's 15 corruptions were not evaluated ({', '.join(missing)})")
    if list(report.severities) != list(SEVERITIES):
        problems.append(f"severities {','.join(map(str, report.severities))}, not RobustBench's 1-5")
    wanted = LEADERBOARD_EXAMPLES.get(dataset)
    if wanted is not None and report.n_examples < wanted:
        problems.append(f"{report.n_examples} examples per corruption and severity, fewer than the leaderboard's "
                        f"{wanted:,}: the accuracy carries more sampling noise")
    if report.clean_accuracy is None:
        problems.append(f"no clean accuracy ({report.clean_note})")
    model = report.model
    entry = {
        "link": None, "name": None, "authors": None, "additional_data": None, "number_forward_passes": 1,
        "dataset": dataset, "venue": None, "architecture": (model.arch or model.name) if model is not None else None,
        "eps": None, "clean_acc": _percent(report.clean_accuracy), "reported": None,
        "corruptions_acc": _percent(report.mean_accuracy), "corruptions_mce": None,
        "footnote": ("Not RobustBench's protocol: " + "; ".join(problems) + ".") if problems else None,
    }
    return entry, problems


def write_robustbench(report: Report | CorruptionReport, directory: str | Path) -> tuple[Path, list[str]]:
    """Write the report's entry (:func:`robustbench_entry`, or :func:`corruptions_entry` for a corruption report)
    to ``directory/robustbench.json`` atomically; returns the path and the reasons it is not a leaderboard
    measurement."""
    if getattr(report, "kind", None) == "corruptions":
        entry, problems = corruptions_entry(report)  # type: ignore[arg-type]
    else:
        entry, problems = robustbench_entry(report)  # type: ignore[arg-type]
    path = Path(directory) / FILENAME
    atomic_write_text(path, json_text(entry, indent=2))
    return path, problems
