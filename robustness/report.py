"""The result of an evaluation: robust accuracy per budget, per attack and in the worst case.

``Report.save(directory)`` writes, each atomically:

* ``report.json``: everything, machine-readable (budgets as exact float strings; ``epsilon_labels``
  maps those typed as fractions to their text, ``{"0.03137254901960784": "8/255"}``), with the
  model block (:class:`~robustness.model_info.ModelInfo`: the SHA-256 of the weights measured,
  their normalization, whether they are a network's initial random weights);
* ``report.md``: for humans, the checks that did not pass first;
* ``samples.csv``: one row per example (label, clean prediction, smallest budget that broke it,
  which attack, its adversarial prediction and perturbation size), to look at the hardest ones;
* ``robust_accuracy.png``: accuracy against budget, one line per attack plus the worst case;
* ``curve.png`` (runs with ``epsilons="curve"``): the robustness curve as a step function on a fine
  grid, over all attacks and from the minimization attacks alone, with the fixed-budget worst case
  at the listed budgets;
* ``examples.png``: clean and adversarial examples side by side (image data only), or a note when
  nothing was broken.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustness import plots
from robustness.claims import published_markdown
from robustness.curve import Curve
from robustness.io import atomic_write_bytes, atomic_write_text, json_text
from robustness.model_info import ModelInfo

__all__ = ["Check", "CHECK_STATUSES", "Report", "eps_labels", "format_eps"]

#: a check's verdict: ``passed``; ``warning`` (the numbers may not be trustworthy); ``failed``
#: (a warning under ``strict=True``); ``skipped`` (it could not run on this evaluation, e.g. a
#: black-box comparison without a black-box attack: the message says why)
CHECK_STATUSES: tuple[str, ...] = ("passed", "warning", "failed", "skipped")
_STATUS_ORDER = {"failed": 0, "warning": 1, "skipped": 2, "passed": 3}


def format_eps(eps: float) -> str:
    """A budget as a short string: ``0.0313725`` -> ``'0.031373'``, ``0.3`` -> ``'0.3'``."""
    return f"{eps:.6g}"


def eps_labels(budgets: Iterable[float], given: Mapping[float, str] | None = None) -> dict[float, str]:
    """Each budget's label: its ``given`` text (``8/255`` as the user typed it), else :func:`format_eps`'s
    short form, with more digits where two budgets would print alike (``0.1`` and ``0.1000001``)."""
    given = given or {}
    ordered = sorted(set(budgets))
    labels = {e: format_eps(e) for e in ordered}
    digits = 7
    while len(set(labels.values())) < len(ordered) and digits <= 17:
        labels = {e: f"{e:.{digits}g}" for e in ordered}
        digits += 1
    labels = labels if len(set(labels.values())) == len(ordered) else {e: repr(e) for e in ordered}
    typed = {**labels, **{e: text for e, text in given.items() if e in labels}}
    return typed if len(set(typed.values())) == len(ordered) else labels


@dataclass(frozen=True)
class Check:
    """The verdict of one sanity check of an evaluation (``robustness.checks``).

    ``message`` says what was measured and, when the check did not pass, the likely cause and
    the fix.
    """

    name: str
    status: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message}


def _keyed(d: dict[float, Any]) -> dict[str, Any]:
    return {repr(float(k)): v for k, v in d.items()}  # shortest exact float text: round-trips


def _unkeyed(d: dict[str, Any]) -> dict[float, Any]:
    return {float(k): _nan(v) for k, v in d.items()}


def _nan(value: Any) -> Any:
    """``None`` (how report.json writes NaN and infinities: standard JSON has neither) as NaN."""
    return math.nan if value is None else value


def _floats(d: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _nan(v) for k, v in (d or {}).items()}


@dataclass
class Report:
    """Robust accuracy of one model over a sweep of budgets.

    ``robust_accuracy[eps]`` is the fraction of examples that are classified correctly and
    that no attack broke within ``eps``: the per-sample worst case over attacks, never the
    best attack's mean. ``by_attack[name][eps]`` is each attack alone; ``cumulative[name][eps]``
    the worst case over the attacks up to and including ``name``, in order. With ``cascade`` (each
    attack ran only on the samples the earlier ones left robust) no attack ran alone, and
    ``by_attack`` holds the cumulative figures too: the tables say so, and ``to_dict`` writes
    ``"cascade": true`` and ``"by_attack_cumulative": true``.

    ``per_class[c]`` holds ``n``, ``clean`` and worst-case ``robust`` accuracy per budget for the
    examples of true class ``c``. ``perturbation[name][eps]`` holds ``count``, ``median`` and
    ``max`` norm of the successful adversarial perturbations of ``name`` within ``eps``.
    ``model_calls[name]`` counts the model calls, samples and samples through a gradient pass
    that each attack spent; ``timings`` its seconds. ``checks`` are the sanity checks' verdicts.

    ``gradient_mode`` is the mode ``evaluate`` set on the model's preprocessing defenses
    (``None``: each left in its own mode) and ``defenses`` lists them, as
    :func:`robustness.defenses.describe_defenses` gives (empty for an undefended model).

    ``model`` (:class:`~robustness.model_info.ModelInfo`) names the weights measured (their SHA-256),
    the normalization inside the model, and whether they are a network's initial random weights;
    ``from_dict`` also reads older reports, whose ``"model"`` was the source as a string.

    ``epsilon_labels[eps]`` is how a budget was typed when that was a fraction (``"8/255"``): the
    tables, report.md and samples.csv print it instead of ``0.0313725`` (presentation only).

    ``curve`` (:class:`~robustness.curve.Curve`, runs with ``epsilons="curve"``; ``None`` otherwise):
    the robustness curve's exact breakpoints, the median adversarial distance, and how far the
    minimization attacks' curve lies above the fixed-budget worst case at each listed budget.

    Per-sample results. ``per_sample`` holds one list per key, one entry per example in data order
    (:meth:`samples` gives the same as typed rows; :func:`robustness.compare_samples` compares two
    reports sample by sample). Budgets are indices into the budgets above 0 of :attr:`epsilons`,
    sorted (``budgets = sorted(e for e in report.epsilons if e > 0)``), ``len(budgets)`` meaning never:

    * ``label``, ``clean_prediction``: the true class and the clean prediction (a sample is attacked
      only when they agree);
    * ``broken_at:<attack>``: the index of the smallest budget at which that attack broke the sample;
    * ``broken_at:worst``: the smallest over the attacks (the per-sample worst case that
      :attr:`robust_accuracy` counts); ``broken_by``: the attack that reached it (the first in order
      on ties; ``""`` when never broken);
    * ``adversarial_prediction``: the prediction on that attack's verified adversarial input (-1 when
      never broken); ``perturbation``: its norm (``None`` when never broken);
    * curve runs only: ``distance``, the smallest verified adversarial distance any attack found,
      at any budget or none (``0.0`` for a sample misclassified clean; ``inf`` where no attack broke
      it, written ``null`` in report.json), and ``distance_by``, the attack that found it (``""``
      where none did, misclassified samples included).

    ``per_sample`` is written to report.json (and as samples.csv) and read back by :meth:`from_dict`.

    ``published`` (:func:`robustness.claims.published_comparison`; ``None`` when the model's source publishes
    nothing): the source's claimed clean and robust accuracy beside ours, with the differences and our 95%
    interval; :meth:`set_published` fills it (the CLI does for every model with claims).
    """

    clean_accuracy: float
    robust_accuracy: dict[float, float]
    by_attack: dict[str, dict[float, float]]
    n_examples: int
    epsilons: list[float]
    norm: str
    bounds: tuple[float, float]
    attacks: dict[str, str]
    seed: int
    batch_size: int
    device: str
    versions: dict[str, str]
    timings: dict[str, float]
    max_perturbation: dict[float, float]
    num_classes: int
    warnings: list[str] = field(default_factory=list)
    model: ModelInfo | None = None
    data: str | None = None
    gradient_mode: str | None = None
    defenses: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    schedule: str = "ascending"
    speedups: dict[str, Any] = field(default_factory=dict)
    cumulative: dict[str, dict[float, float]] = field(default_factory=dict)
    per_class: dict[int, dict[str, Any]] = field(default_factory=dict)
    perturbation: dict[str, dict[float, dict[str, float]]] = field(default_factory=dict)
    model_calls: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list, repr=False)
    per_sample: dict[str, list[Any]] = field(default_factory=dict, repr=False)
    epsilon_labels: dict[float, str] = field(default_factory=dict)
    curve: Curve | None = None
    cascade: bool = False
    published: dict[str, Any] | None = None

    @property
    def worst_case(self) -> float:
        """Worst-case robust accuracy at the largest budget."""
        return self.robust_accuracy[max(self.robust_accuracy)]

    @property
    def checks_passed(self) -> bool:
        """True when no check ended in ``warning`` or ``failed``."""
        return all(c.status in ("passed", "skipped") for c in self.checks)

    def eps_label(self, eps: float) -> str:
        """``eps`` as the report prints it: short, with the digits that tell this report's budgets apart."""
        return eps_labels([*self.epsilons, *self.robust_accuracy, eps], self.epsilon_labels)[eps]

    @property
    def failed_checks(self) -> list[Check]:
        """Checks with status ``failed`` (warnings under ``strict=True``)."""
        return [c for c in self.checks if c.status == "failed"]

    def checks_by_severity(self) -> list[Check]:
        """Checks ordered failed, warning, skipped, passed (stable within each)."""
        return sorted(self.checks, key=lambda c: _STATUS_ORDER.get(c.status, 9))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the same keys as the attributes; budgets become strings.

        ``examples`` keeps each example's metadata (not its pixels); ``per_sample`` is written with
        its keys (an infinite ``distance`` as ``null``); ``curve`` is :meth:`Curve.to_dict` (``null``
        without a curve).
        """
        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": _keyed(self.robust_accuracy),
            "by_attack": {name: _keyed(v) for name, v in self.by_attack.items()},
            "by_attack_cumulative": self.cascade,
            "cascade": self.cascade,
            "cumulative": {name: _keyed(v) for name, v in self.cumulative.items()},
            "per_class": {str(c): {**v, "robust": _keyed(v["robust"])} for c, v in self.per_class.items()},
            "perturbation": {name: _keyed(v) for name, v in self.perturbation.items()},
            "model_calls": self.model_calls,
            "n_examples": self.n_examples,
            "epsilons": self.epsilons,
            "epsilon_labels": _keyed(self.epsilon_labels),
            "norm": self.norm,
            "bounds": list(self.bounds),
            "attacks": self.attacks,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "versions": self.versions,
            "timings": self.timings,
            "max_perturbation": _keyed(self.max_perturbation),
            "num_classes": self.num_classes,
            "warnings": self.warnings,
            "model": self.model.to_dict() if self.model is not None else None,
            "data": self.data,
            "gradient_mode": self.gradient_mode,
            "defenses": self.defenses,
            "checks": [c.to_dict() for c in self.checks_by_severity()],
            "schedule": self.schedule,
            "speedups": self.speedups,
            "examples": [{k: v for k, v in e.items() if k not in ("clean", "adversarial")} for e in self.examples],
            "curve": self.curve.to_dict() if self.curve is not None else None,
            "per_sample": self.per_sample,
            "published": self.published,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_dict` output (``report.json``); a float written as
        ``null`` (NaN or an infinity: standard JSON has neither) reads back as NaN."""
        return cls(
            clean_accuracy=_nan(data["clean_accuracy"]),
            robust_accuracy=_unkeyed(data["robust_accuracy"]),
            by_attack={n: _unkeyed(v) for n, v in data["by_attack"].items()},
            n_examples=data["n_examples"],
            epsilons=list(data["epsilons"]),
            norm=data["norm"],
            bounds=tuple(data["bounds"]),  # type: ignore[arg-type]
            attacks=data["attacks"],
            seed=data["seed"],
            batch_size=data["batch_size"],
            device=data["device"],
            versions=data["versions"],
            timings=_floats(data["timings"]),
            max_perturbation=_unkeyed(data["max_perturbation"]),
            num_classes=data["num_classes"],
            warnings=list(data.get("warnings", [])),
            model=ModelInfo.from_dict(data.get("model")),
            data=data.get("data"),
            gradient_mode=data.get("gradient_mode"),
            defenses=list(data.get("defenses", [])),
            checks=[Check(**c) for c in data.get("checks", [])],
            schedule=data.get("schedule", "ascending"),
            speedups=dict(data.get("speedups") or {}),
            cumulative={n: _unkeyed(v) for n, v in data.get("cumulative", {}).items()},
            per_class={int(c): {**v, "clean": _nan(v.get("clean")), "robust": _unkeyed(v["robust"])}
                       for c, v in data.get("per_class", {}).items()},
            perturbation={n: {float(e): _floats(stats) for e, stats in v.items()}
                          for n, v in data.get("perturbation", {}).items()},
            model_calls=data.get("model_calls", {}),
            epsilon_labels={float(e): str(text) for e, text in data.get("epsilon_labels", {}).items()},
            per_sample=_per_sample(data.get("per_sample") or {}),
            curve=Curve.from_dict(data.get("curve")),
            cascade=bool(data.get("cascade", False)),
            published=data.get("published"),
        )

    def set_published(self, claims: Mapping[str, Any] | None = None) -> list[str]:
        """Set the published numbers beside ours (:func:`robustness.claims.attach`): ``claims`` (default: the
        model block's) fill :attr:`published`, and the loud warnings (clean accuracy below the published one,
        robust accuracy above it, beyond noise) are warned and added to :attr:`warnings`; returns them."""
        from robustness.claims import attach

        return attach(self, claims, stacklevel=2)

    def samples(self) -> list[Any]:
        """:attr:`per_sample` as one typed row per example (:class:`robustness.samples.SampleResult`),
        budgets as values instead of indices."""
        from robustness.samples import sample_rows

        return sample_rows(self)

    def curve_table(self) -> str:
        """Markdown: the curve at each listed budget above 0, from every attack and from the minimization
        attacks alone, the fixed-budget worst case there, and how far the minimization curve lies above
        it; empty without a curve."""
        if self.curve is None or not any(e > 0 for e in self.robust_accuracy):
            return ""
        c = self.curve
        rows = ["| eps | curve (all attacks) | minimization attacks | fixed-budget worst case | min-norm above by |",
                "|---:|---:|---:|---:|---:|"]
        for eps in sorted(e for e in self.robust_accuracy if e > 0):
            g = c.gap.get(eps)
            cells = [self.eps_label(eps), _pct(c.accuracy_at(eps)), _pct(c.minimization_at(eps)),
                     _pct(g["fixed_budget"]) if g else "-", f"{100 * g['gap']:+.1f} pts" if g else "-"]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def curve_summary(self) -> str:
        """One line: the median adversarial distance and the largest gap; empty without a curve."""
        if self.curve is None:
            return ""
        c = self.curve
        line = (f"median {self.norm} distance of the correctly classified samples: {_distance(c.median_distance)} "
                f"({c.never_broken} never broken)")
        if c.gap:
            line += (f"; the minimization attacks' curve lies at most {100 * c.largest_gap:.1f} points above the "
                     f"fixed-budget worst case at the listed budgets")
        return line

    def table(self) -> str:
        """Markdown table: one row per budget, the worst case and each attack as columns (cascaded:
        the cumulative accuracy after each attack, headed ``+ name``)."""
        names = list(self.by_attack)
        shown = [f"+ {n}" for n in names] if self.cascade else names
        head = "| eps | worst case | " + " | ".join(shown) + " |" if names else "| eps | worst case |"
        rule = "|" + "---:|" * (2 + len(names))
        rows = [head, rule]
        for eps in sorted(self.robust_accuracy):
            cells = [self.eps_label(eps), _pct(self.robust_accuracy[eps])]
            cells += [_pct(self.by_attack[n].get(eps, math.nan)) for n in names]
            rows.append("| " + " | ".join(cells) + " |")
        if self.cascade and names:
            rows.append("\ncascade: each attack ran only on the samples the earlier ones left robust; the "
                        "attack columns are cumulative (accuracy after that attack and the ones before it)")
        return "\n".join(rows)

    def checks_table(self) -> str:
        """Markdown list of the checks, the ones that did not pass first."""
        return "\n".join(f"- **{c.status}** `{c.name}`: {c.message}" for c in self.checks_by_severity())

    def to_markdown(self) -> str:
        """The human-readable report."""
        lines = [
            "# Robustness report",
            "",
            *(self.model or ModelInfo()).markdown_lines(),
            f"- data: {self.data or 'in-memory data'} ({self.n_examples} examples, {self.num_classes} classes)",
            f"- norm: {self.norm}, bounds: {list(self.bounds)}, seed: {self.seed}, device: {self.device}, "
            f"budget schedule: {self.schedule}, cascade: {'yes' if self.cascade else 'no'}",
            f"- clean accuracy: {_pct(self.clean_accuracy)}",
            f"- worst-case robust accuracy at eps={self.eps_label(max(self.robust_accuracy))}: {_pct(self.worst_case)}",
            f"- time: {self.timings.get('total', math.nan):.2f} s",
            "",
        ]
        if self.checks and not self.checks_passed:
            lines += ["## Checks that did not pass", ""]
            lines += [f"- **{c.status}** `{c.name}`: {c.message}" for c in self.checks_by_severity()
                      if c.status in ("failed", "warning")] + [""]
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        lines += published_markdown(self.published)
        if self.defenses:
            lines += ["## Defenses", ""]
            for d in self.defenses:
                lines.append(f"- `{d['path'] or 'model'}`: gradient mode {d['gradient_mode']}, "
                             f"EOT samples {d['eot_samples']}")
                lines += [f"  - {p['name']}({', '.join(f'{k}={v!r}' for k, v in p['settings'].items())}): "
                          f"{p['backward']}" for p in d["preprocessors"]]
            lines.append("")
        lines += ["## Robust accuracy (per-sample worst case over attacks)", "", self.table(), ""]
        lines += self._curve_lines()
        lines += self._cumulative_lines() + self._per_class_lines() + self._cost_lines()
        lines += ["## Largest perturbation actually used", "", "| eps | largest norm |", "|---:|---:|"]
        lines += [f"| {self.eps_label(eps)} | {used:.6g} |" for eps, used in sorted(self.max_perturbation.items())]
        if self.checks:
            lines += ["", "## All checks", "", self.checks_table()]
        lines += ["", "## Attacks", ""] + [f"- `{n}`: {d}" for n, d in self.attacks.items()]
        lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in self.versions.items()]
        return "\n".join(lines) + "\n"

    def _curve_lines(self) -> list[str]:
        if self.curve is None:
            return []
        c = self.curve
        lines = ["## Robustness curve", "",
                 f"- {self.curve_summary()}",
                 f"- minimization attacks: {', '.join(c.minimization_attacks)} (median distance from them alone: "
                 f"{_distance(c.minimization_median)})",
                 f"- {len(c.breakpoints)} breakpoints (exact, in report.json; a sample at distance d is broken at "
                 f"every budget >= d); the step curve is in curve.png", ""]
        table = self.curve_table()
        if table:
            lines += ["A minimization attack looks for the smallest perturbation, not for the strongest one within "
                      "a budget: where it lies above the fixed-budget attacks, the curve between the listed "
                      "budgets is that much too optimistic.", "", table, ""]
        return lines

    def _cumulative_lines(self) -> list[str]:
        if len(self.cumulative) < 2 or self.cascade:  # cascaded, the main table is this one already
            return []
        names = list(self.cumulative)
        lines = ["## Cumulative robust accuracy (after each attack, in order)", "",
                 "| eps | " + " | ".join(f"+ {n}" for n in names) + " |", "|" + "---:|" * (1 + len(names))]
        for eps in sorted(self.robust_accuracy):
            lines.append("| " + " | ".join([self.eps_label(eps)] + [_pct(self.cumulative[n].get(eps, math.nan))
                                                                 for n in names]) + " |")
        return lines + [""]

    def _per_class_lines(self) -> list[str]:
        if not self.per_class:
            return []
        eps = sorted(e for e in self.robust_accuracy if e > 0)
        lines = ["## Per class (worst case)", "",
                 "| class | n | clean | " + " | ".join(f"eps {self.eps_label(e)}" for e in eps) + " |",
                 "|" + "---:|" * (3 + len(eps))]
        for c, v in sorted(self.per_class.items()):
            cells = [str(c), str(v["n"]), _pct(v["clean"])] + [_pct(v["robust"].get(e, math.nan)) for e in eps]
            lines.append("| " + " | ".join(cells) + " |")
        return lines + [""]

    def _cost_lines(self) -> list[str]:
        if not self.perturbation and not self.model_calls:
            return []
        lines = ["## Per attack: successful perturbations (median / max norm) and cost", "",
                 "| attack | eps | broken | median norm | max norm |", "|---|---:|---:|---:|---:|"]
        for name, per_eps in self.perturbation.items():
            for e, st in sorted(per_eps.items()):
                lines.append(f"| {name} | {self.eps_label(e)} | {st['count']} | {_num(st['median'])} | "
                             f"{_num(st['max'])} |")
        lines += ["", "| attack | seconds | model calls | samples | samples through a gradient pass |",
                  "|---|---:|---:|---:|---:|"]
        for name, calls in self.model_calls.items():
            lines.append(f"| {name} | {self.timings.get(name, math.nan):.3f} | {calls['calls']} | "
                         f"{calls['samples']} | {calls['gradient_samples']} |")
        return lines + [""]

    def samples_csv(self) -> str:
        """One row per example: index, label, clean prediction, correct, the smallest budget that
        broke it (empty: none did), the attack that did, its adversarial prediction and
        perturbation norm, and the smallest breaking budget of each attack."""
        s = self.per_sample
        if not s:
            return ""
        budgets = sorted(e for e in self.robust_accuracy if e > 0)
        names = [k.split(":", 1)[1] for k in s if k.startswith("broken_at:") and k != "broken_at:worst"]

        labels = eps_labels([*self.epsilons, *self.robust_accuracy], self.epsilon_labels)

        def at(index: int) -> str:
            return labels[budgets[index]] if index < len(budgets) else ""

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        curve = "distance" in s
        w.writerow(["index", "label", "clean_prediction", "correct", "broken_at_eps", "broken_by",
                    "adversarial_prediction", "perturbation_norm"] + [f"broken_at_eps:{n}" for n in names]
                   + (["distance", "distance_by"] if curve else []))
        for i, (label, pred) in enumerate(zip(s["label"], s["clean_prediction"])):
            worst = s["broken_at:worst"][i]
            broken = worst < len(budgets)
            w.writerow([i, label, pred, int(label == pred), at(worst), s.get("broken_by", [""] * (i + 1))[i],
                         s["adversarial_prediction"][i] if broken and "adversarial_prediction" in s else "",
                         f"{s['perturbation'][i]:.6g}" if broken and "perturbation" in s else ""]
                        + [at(s[f"broken_at:{n}"][i]) for n in names]
                        + ([_distance(s["distance"][i]), s["distance_by"][i]] if curve else []))
        return buf.getvalue()

    def plot_png(self) -> bytes:
        """PNG bytes of robust accuracy against budget."""
        # budgets typed as fractions label the axis as typed; plain floats keep matplotlib's ticks
        text = eps_labels(list(self.robust_accuracy), self.epsilon_labels) if self.epsilon_labels else None
        return plots.accuracy_png(self.robust_accuracy, self.by_attack, norm=self.norm,
                                  clean_accuracy=self.clean_accuracy, n_examples=self.n_examples, eps_text=text)

    def curve_png(self) -> bytes:
        """PNG bytes of the robustness curve (a report with :attr:`curve` only)."""
        if self.curve is None:
            raise ValueError("this report has no curve: evaluate with epsilons='curve'")
        c = self.curve
        return plots.curve_png(c.breakpoints, c.minimization, clean_accuracy=c.clean_accuracy,
                               fixed={e: g["fixed_budget"] for e, g in c.gap.items()}, norm=self.norm,
                               n_examples=self.n_examples, median=c.median_distance,
                               budgets=[e for e in self.robust_accuracy if e > 0])

    def save(self, directory: str | Path) -> Path:
        """Write report.json, report.md, samples.csv, robust_accuracy.png, curve.png and examples.png into
        ``directory``, each atomically. examples.png: a grid of the broken examples for image data;
        a note (:data:`robustness.plots.NOTHING_BROKEN`) when no attack broke any example at any
        budget; none without a budget above 0, or for broken examples that are not images."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.json", json_text(self.to_dict(), indent=2))  # NaN -> null
        atomic_write_text(out / "report.md", self.to_markdown())
        if self.per_sample:
            atomic_write_text(out / "samples.csv", self.samples_csv())
        else:  # never leave an earlier report's file beside this one
            (out / "samples.csv").unlink(missing_ok=True)
        atomic_write_bytes(out / "robust_accuracy.png", self.plot_png())
        if self.curve is not None:
            atomic_write_bytes(out / "curve.png", self.curve_png())
        else:
            (out / "curve.png").unlink(missing_ok=True)
        nothing_broken = not self.examples and any(e > 0 for e in self.epsilons)
        if plots.can_show_images(self.examples) or nothing_broken:  # the latter: a note that says so
            atomic_write_bytes(out / "examples.png", plots.examples_png(self.examples, self.bounds))
        else:
            (out / "examples.png").unlink(missing_ok=True)
        return out


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _distance(value: float) -> str:
    """A distance as the tables print it: ``inf`` for never broken, ``n/a`` for NaN."""
    if value is None or math.isinf(value):
        return "inf"
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _per_sample(data: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """``per_sample`` read from report.json: an infinite ``distance`` was written ``null``."""
    out = {k: list(v) for k, v in data.items()}
    if "distance" in out:
        out["distance"] = [math.inf if v is None else float(v) for v in out["distance"]]
    return out


def _num(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
