"""``robustness compare DIR [DIR ...]``: saved reports side by side, one table and one plot per norm.

Every ``report.json`` under each ``DIR`` (searched recursively: the Quickstart writes
``robustness-report/<model>/<norm>/report.json``) is one column, labelled by its folder relative to the ``DIR``
given (the ``DIR``'s name for a report directly in it; prefixed by the ``DIR``'s name when two ``DIR`` s would
give the same label; a trailing ``/<norm>`` folder is left out of that norm's table). Per norm, a markdown
table: the clean accuracy and the worst-case robust accuracy at each budget (rows), the worst case at each
report's largest budget, the median adversarial distance of reports with a robustness curve, and the
published claims of reports that carry them. Reports of common corruptions
(``"kind": "corruptions"``) get a table of their own: mean accuracy per severity.

A warning goes with any table whose reports measured different data, example counts, seeds or attack
settings: their numbers are then not comparable sample for sample (nor, often, at all). The tables are
printed; with ``--out DIR`` they are written to ``compare.md`` and each norm's plot to ``compare_<norm>.png``
(robust accuracy against the budget, a line per report), atomically. Exit codes: 0 ok, 2 a ``DIR`` that is
missing, holds no report.json, or holds one that cannot be read.

Example::

    robustness compare robustness-report                      # the Quickstart's two models, both norms
    robustness compare runs/a runs/b --norm linf --out cmp    # cmp/compare.md, cmp/compare_linf.png
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustness import plots
from robustness.claims import budget_text
from robustness.errors import InputError
from robustness.io import atomic_write_bytes, atomic_write_text
from robustness.norms import NORMS
from robustness.report import Report, eps_labels

__all__ = ["Comparison", "SavedReport", "add_compare_parser", "compare", "find_reports", "run_compare"]

#: budgets equal within this relative tolerance share a row
REL_TOL = 1e-6
CORRUPTIONS = "corruptions"


@dataclass(frozen=True)
class SavedReport:
    """One report.json found under a ``DIR``: its column label, its path, and what it holds.

    ``report`` is the :class:`~robustness.report.Report` for a robustness report; ``severities`` the mean
    accuracy per severity (over the corruptions) for a ``"kind": "corruptions"`` report (``None`` otherwise, or
    when its layout is not one this command reads).
    """

    label: str
    path: Path
    raw: dict[str, Any] = field(repr=False)
    report: Report | None = None
    severities: dict[int, float] | None = None

    @property
    def kind(self) -> str:
        return str(self.raw.get("kind") or "robustness")


@dataclass
class Comparison:
    """What :func:`compare` found: the markdown per table (``"linf"``, ``"l2"``, ..., ``"corruptions"``), the
    warnings (reports not comparable sample for sample) and notes (reports skipped), and the PNG per norm."""

    reports: list[SavedReport]
    tables: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pngs: dict[str, bytes] = field(default_factory=dict, repr=False)

    def to_markdown(self) -> str:
        """compare.md: each table under its heading, with its warnings."""
        lines = ["# Comparison of saved reports", ""]
        lines += [f"- `{r.label}`: {r.path}" for r in self.reports] + [""]
        if self.notes:
            lines += [f"Note: {n}" for n in self.notes] + [""]
        for name, table in self.tables.items():
            title = "Common corruptions: mean accuracy per severity" if name == CORRUPTIONS else \
                f"{name}: worst-case robust accuracy per budget"
            lines += [f"## {title}", "", table, ""]
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        return "\n".join(lines)


def _found(directory: Path) -> list[Path]:
    if directory.is_file():
        return [directory] if directory.name == "report.json" else []
    return sorted(directory.rglob("report.json"))


def find_reports(dirs: Sequence[str | Path]) -> list[SavedReport]:
    """Every report.json under each of ``dirs``, read and labelled (see the module docstring).

    :class:`~robustness.errors.InputError` for a ``DIR`` that does not exist or holds no report.json, and for a
    report.json that is not JSON or not a report.
    """
    if not dirs:
        raise InputError("compare: give at least one directory that holds report.json files")
    found: list[tuple[Path, Path]] = []
    for d in map(Path, dirs):
        if not d.exists():
            raise InputError(f"compare: {d} does not exist: give a directory that `robustness evaluate --out` wrote")
        paths = _found(d)
        if not paths:
            raise InputError(f"compare: no report.json under {d}: give a directory that `robustness evaluate --out` "
                             "wrote (it is searched recursively)")
        found += [(d, p) for p in paths]
    labels = _labels(found)
    return [_read(path, label) for (_, path), label in zip(found, labels)]


def _labels(found: list[tuple[Path, Path]]) -> list[str]:
    def name(d: Path) -> str:
        return (d.parent if d.is_file() else d).resolve().name or str(d)

    def rel(d: Path, p: Path) -> str:
        base = d.parent if d.is_file() else d
        inner = p.parent.relative_to(base).as_posix()
        return name(d) if inner == "." else inner

    labels = [rel(d, p) for d, p in found]
    if len(set(labels)) < len(labels):  # two DIRs give the same label: say which DIR each came from
        labels = [label if label == name(d) else f"{name(d)}/{label}" for (d, _), label in zip(found, labels)]
    seen: dict[str, int] = {}
    out = []
    for label in labels:  # still alike (two DIRs of the same name): number them
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _read(path: Path, label: str) -> SavedReport:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"compare: cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"compare: {path} is not valid JSON (line {e.lineno}: {e.msg}): rewrite it with "
                         "`robustness evaluate`, or leave it out") from None
    if not isinstance(raw, dict):
        raise InputError(f"compare: {path} is not a robustness report (a JSON object was expected)")
    if raw.get("kind") == CORRUPTIONS:
        return SavedReport(label, path, raw, severities=_severities(raw))
    try:
        report = Report.from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"compare: {path} is not a robustness report.json ({type(e).__name__}: {e}): rewrite it "
                         "with `robustness evaluate`, or leave it out") from None
    return SavedReport(label, path, raw, report=report)


def _severities(raw: Mapping[str, Any]) -> dict[int, float] | None:
    """Mean accuracy per severity of a corruptions report (:class:`robustness.corruption_report.CorruptionReport`):
    its ``per_severity``, else the mean over its ``accuracy`` (``{corruption: {severity: accuracy}}``); ``None``
    when it holds neither."""
    try:
        block = raw.get("per_severity")
        if isinstance(block, Mapping) and block:
            return {int(s): float(v) for s, v in block.items() if v is not None}
        block = raw.get("accuracy")
        if isinstance(block, Mapping) and block and all(isinstance(v, Mapping) for v in block.values()):
            rows = [{int(s): float(v) for s, v in per.items() if v is not None} for per in block.values()]
            severities = sorted({s for r in rows for s in r})
            return {s: sum(r[s] for r in rows if s in r) / sum(1 for r in rows if s in r) for s in severities}
    except (TypeError, ValueError):
        pass
    return None


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _budget_rows(reports: Iterable[Report]) -> list[float]:
    """The budgets above 0 of every report, those equal within :data:`REL_TOL` merged (the first kept)."""
    rows: list[float] = []
    for eps in sorted({e for r in reports for e in r.robust_accuracy if e > 0}):
        if not rows or not math.isclose(eps, rows[-1], rel_tol=REL_TOL):
            rows.append(eps)
    return rows


def _at(report: Report, eps: float) -> float | None:
    return next((v for e, v in report.robust_accuracy.items() if math.isclose(e, eps, rel_tol=REL_TOL)), None)


def _norm_table(group: list[SavedReport]) -> tuple[str, dict[str, dict[float, float]], dict[float, str]]:
    """One norm's markdown table, the plot's series and the budgets' labels."""
    reports = [s.report for s in group if s.report is not None]
    budgets = _budget_rows(reports)
    given = {e: t for r in reports for e, t in r.epsilon_labels.items()}
    text = eps_labels([0.0, *budgets], {e: t for e, t in given.items() if e in budgets})
    shown = _shown_labels(group)
    head = "| | " + " | ".join(f"`{label}`" for label in shown) + " |"
    lines = [head, "|---|" + "---:|" * len(group)]
    lines.append("| clean | " + " | ".join(_pct(r.clean_accuracy) for r in reports) + " |")
    for eps in budgets:
        lines.append(f"| eps {text[eps]} | " + " | ".join(_pct(_at(r, eps)) for r in reports) + " |")
    worst = [f"{_pct(r.worst_case)} at {r.eps_label(max(r.robust_accuracy))}" if max(r.robust_accuracy) > 0 else "-"
             for r in reports]
    lines.append("| worst case (largest budget) | " + " | ".join(worst) + " |")
    if any(r.curve is not None for r in reports):
        lines.append("| median distance (curve) | " + " | ".join(
            f"{r.curve.median_distance:.4g}" if r.curve is not None else "-" for r in reports) + " |")
    if any(r.published for r in reports):
        lines.append("| published clean | " + " | ".join(_pct((r.published or {}).get("clean", {}).get("claimed"))
                                                          for r in reports) + " |")
        lines.append("| published robust | " + " | ".join(_claimed_robust(r) for r in reports) + " |")
    lines.append("| examples | " + " | ".join(str(r.n_examples) for r in reports) + " |")
    series = {label: {0.0: s.report.clean_accuracy, **{e: v for e in budgets if (v := _at(s.report, e)) is not None}}
              for label, s in zip(shown, group) if s.report is not None}
    return "\n".join(lines), series, text


def _shown_labels(group: list[SavedReport]) -> list[str]:
    """The labels in one norm's table: without a trailing ``/<norm>`` folder (the Quickstart's
    ``standard/linf``) when every label has it and they stay distinct."""
    norm = group[0].report.norm if group and group[0].report is not None else ""
    short = [s.label.removesuffix(f"/{norm}") for s in group]
    if all(s.label.endswith(f"/{norm}") for s in group) and len(set(short)) == len(short):
        return short
    return [s.label for s in group]


def _claimed_robust(report: Report) -> str:
    robust = (report.published or {}).get("robust") or {}
    if robust.get("claimed") is None:
        return "-"
    return _pct(robust["claimed"]) + (f" at {budget_text(robust['eps'])}" if robust.get("eps") is not None else "")


def _differences(group: list[SavedReport], what: str) -> list[str]:
    """Why the reports of ``group`` are not comparable sample for sample (one warning, or none)."""
    reports = [(s.label, s.report) for s in group if s.report is not None]
    if len(reports) < 2:
        return []
    found = []
    for name, get in (("data", lambda r: r.data), ("example counts", lambda r: r.n_examples),
                      ("seeds", lambda r: r.seed), ("attack settings", lambda r: r.attacks)):
        values = [get(r) for _, r in reports]
        if any(v != values[0] for v in values[1:]):
            shown = "; ".join(f"{label}: {_short(get(r))}" for label, r in reports)
            found.append(f"{name} differ ({shown})")
    labels = [tuple(r.per_sample.get("label", ())) for _, r in reports]
    if not found and all(labels) and any(v != labels[0] for v in labels[1:]):
        found.append("the examples' labels differ (a different subset of the data)")
    if not found:
        return []
    return [f"{what}: the reports are not comparable sample for sample: {'; '.join(found)}"]


def _short(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, (Mapping, list)):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def compare(dirs: Sequence[str | Path], *, norm: str | None = None) -> Comparison:
    """The reports under ``dirs`` side by side (see the module docstring); ``norm`` keeps that norm's only."""
    found = find_reports(dirs)
    result = Comparison(found)
    norms = [n for n in NORMS if any(s.report is not None and s.report.norm == n for s in found)]
    others = sorted({s.report.norm for s in found if s.report is not None and s.report.norm not in NORMS})
    for n in [*norms, *others]:
        if norm is not None and n != norm:
            continue
        group = [s for s in found if s.report is not None and s.report.norm == n]
        table, series, text = _norm_table(group)
        result.tables[n] = table
        result.warnings += _differences(group, n)
        title = f"{n}: worst-case robust accuracy, {len(series)} report{'s' * (len(series) != 1)}"
        result.pngs[n] = plots.comparison_png(series, norm=n, eps_text=text if len(text) > 1 else None, title=title)
    corrupt = [s for s in found if s.kind == CORRUPTIONS]
    readable = [s for s in corrupt if s.severities]
    result.notes += [f"{s.label}: a corruptions report whose accuracy per severity this command cannot read: "
                     "skipped" for s in corrupt if not s.severities]
    result.notes += [f"{s.label}: a report of kind {s.kind!r}, which this command does not compare: skipped"
                     for s in found if s.report is None and s.kind != CORRUPTIONS]
    if readable and norm in (None, CORRUPTIONS):
        result.tables[CORRUPTIONS] = _corruption_table(readable)
        result.warnings += _corruption_differences(readable)
    if not result.tables and norm is None:
        raise InputError(f"compare: none of the reports under the directories can be compared: "
                         f"{'; '.join(result.notes)}")
    if not result.tables:
        kinds = ", ".join(sorted({s.report.norm if s.report is not None else s.kind for s in found}))
        raise InputError(f"compare: no report under the directories is {norm}: they hold {kinds}; drop --norm or "
                         "use one of those")
    return result


def _corruption_differences(group: list[SavedReport]) -> list[str]:
    """Why the corruptions reports of ``group`` are not comparable sample for sample (one warning, or none)."""
    differ = []
    for key, name in (("data", "data"), ("n_examples", "example counts"), ("seed", "seeds"),
                      ("corruptions", "corruptions")):
        values = [s.raw.get(key) for s in group]
        if any(v != values[0] for v in values[1:]):
            shown = "; ".join(f"{s.label}: {_short(v)}" for s, v in zip(group, values))
            differ.append(f"{name} differ ({shown})")
    return [f"corruptions: the reports are not comparable sample for sample: {'; '.join(differ)}"] if differ else []


def _corruption_table(group: list[SavedReport]) -> str:
    severities = sorted({s for g in group for s in (g.severities or {})})
    lines = ["| severity | " + " | ".join(f"`{g.label}`" for g in group) + " |", "|---|" + "---:|" * len(group)]
    clean = [g.raw.get("clean_accuracy") for g in group]
    if any(isinstance(c, (int, float)) for c in clean):
        lines.append("| clean | " + " | ".join(_pct(c) if isinstance(c, (int, float)) else "-" for c in clean) + " |")
    for sev in severities:
        lines.append(f"| {sev} | " + " | ".join(_pct((g.severities or {}).get(sev)) for g in group) + " |")
    means = [g.raw["mean_accuracy"] if isinstance(g.raw.get("mean_accuracy"), (int, float)) else
             sum(g.severities.values()) / len(g.severities) if g.severities else None for g in group]
    lines.append("| mean | " + " | ".join(_pct(m) for m in means) + " |")
    lines.append("| examples | " + " | ".join(str(g.raw.get("n_examples", "-")) for g in group) + " |")
    return "\n".join(lines)


def add_compare_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``compare`` subcommand's parser, added to ``sub`` (the CLI's subparsers)."""
    cmp = sub.add_parser("compare", help="saved reports side by side: a table and a plot per norm")
    cmp.add_argument("dirs", nargs="+", metavar="DIR",
                     help="directories holding report.json files (searched recursively), e.g. robustness-report")
    cmp.add_argument("--out", default=None, help="also write compare.md and compare_<norm>.png into this directory")
    cmp.add_argument("--norm", default=None, choices=[*NORMS, CORRUPTIONS], type=str.lower,
                     help="compare only the reports of this norm (default: every norm, one table each)")
    return cmp


def run_compare(args: argparse.Namespace) -> int:
    """``robustness compare``: print the tables and warnings; with ``--out``, write compare.md and the PNGs."""
    out = Path(args.out) if args.out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a directory: give a directory for compare.md")
    result = compare(args.dirs, norm=args.norm)
    for note in result.notes:
        print(f"note: {note}")
    for name, table in result.tables.items():
        print(f"\n{name}:" if name != CORRUPTIONS else "\ncorruptions (mean accuracy per severity):")
        print(table)
    for warning in result.warnings:
        print(f"warning: {warning}")
    if out is not None:
        atomic_write_text(out / "compare.md", result.to_markdown())
        for name, png in result.pngs.items():
            atomic_write_bytes(out / f"compare_{name}.png", png)
        print(f"-> {out / 'compare.md'}" + "".join(f", {out / f'compare_{n}.png'}" for n in result.pngs))
    return 0
