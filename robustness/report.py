"""The result of an evaluation: robust accuracy per budget, per attack and in the worst case.

``Report.save(directory)`` writes ``report.json`` (machine-readable, budgets as strings),
``report.md`` (for humans) and ``robust_accuracy.png`` (accuracy against budget, one line
per attack plus the per-sample worst case), each atomically.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustness.io import atomic_write_bytes, atomic_write_text

__all__ = ["Report", "format_eps"]


def format_eps(eps: float) -> str:
    """A budget as a short string: ``0.0313725`` -> ``'0.031373'``, ``0.3`` -> ``'0.3'``."""
    return f"{eps:.6g}"


@dataclass
class Report:
    """Robust accuracy of one model over a sweep of budgets.

    ``robust_accuracy[eps]`` is the fraction of examples that are classified correctly and
    that no attack broke within ``eps``: the per-sample worst case over attacks, never the
    best attack's mean. ``by_attack[name][eps]`` is each attack alone.

    ``gradient_mode`` is the mode ``evaluate`` set on the model's preprocessing defenses
    (``None``: each left in its own mode) and ``defenses`` lists them, as
    :func:`defenses.describe_defenses` gives (empty for an undefended model).
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
    model: str | None = None
    data: str | None = None
    gradient_mode: str | None = None
    defenses: list[dict[str, Any]] = field(default_factory=list)
    per_sample: dict[str, list[int]] = field(default_factory=dict, repr=False)

    @property
    def worst_case(self) -> float:
        """Worst-case robust accuracy at the largest budget."""
        return self.robust_accuracy[max(self.robust_accuracy)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the same keys as the attributes; budgets become strings."""

        def keyed(d: dict[float, float]) -> dict[str, float]:
            return {repr(float(k)): v for k, v in d.items()}  # shortest exact float text: round-trips

        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": keyed(self.robust_accuracy),
            "by_attack": {name: keyed(v) for name, v in self.by_attack.items()},
            "n_examples": self.n_examples,
            "epsilons": self.epsilons,
            "norm": self.norm,
            "bounds": list(self.bounds),
            "attacks": self.attacks,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "versions": self.versions,
            "timings": self.timings,
            "max_perturbation": keyed(self.max_perturbation),
            "num_classes": self.num_classes,
            "warnings": self.warnings,
            "model": self.model,
            "data": self.data,
            "gradient_mode": self.gradient_mode,
            "defenses": self.defenses,
        }

    def table(self) -> str:
        """Markdown table: one row per budget, the worst case and each attack as columns."""
        names = list(self.by_attack)
        head = "| eps | worst case | " + " | ".join(names) + " |" if names else "| eps | worst case |"
        rule = "|" + "---:|" * (2 + len(names))
        rows = [head, rule]
        for eps in sorted(self.robust_accuracy):
            cells = [format_eps(eps), _pct(self.robust_accuracy[eps])]
            cells += [_pct(self.by_attack[n].get(eps, math.nan)) for n in names]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def to_markdown(self) -> str:
        """The human-readable report."""
        lines = [
            "# Robustness report",
            "",
            f"- model: {self.model or 'in-memory model'}",
            f"- data: {self.data or 'in-memory data'} ({self.n_examples} examples, {self.num_classes} classes)",
            f"- norm: {self.norm}, bounds: {list(self.bounds)}, seed: {self.seed}, device: {self.device}",
            f"- clean accuracy: {_pct(self.clean_accuracy)}",
            f"- worst-case robust accuracy at eps={format_eps(max(self.robust_accuracy))}: {_pct(self.worst_case)}",
            f"- time: {self.timings.get('total', math.nan):.2f} s",
            "",
        ]
        if self.defenses:
            lines += ["## Defenses", ""]
            for d in self.defenses:
                lines.append(f"- `{d['path'] or 'model'}`: gradient mode {d['gradient_mode']}, "
                             f"EOT samples {d['eot_samples']}")
                lines += [f"  - {p['name']}({', '.join(f'{k}={v!r}' for k, v in p['settings'].items())}): "
                          f"{p['backward']}" for p in d["preprocessors"]]
            lines.append("")
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        lines += ["## Robust accuracy (per-sample worst case over attacks)", "", self.table(), ""]
        lines += ["## Largest perturbation actually used", "", "| eps | largest norm |", "---:|---:|"]
        lines[-1] = "|---:|---:|"
        for eps, used in sorted(self.max_perturbation.items()):
            lines.append(f"| {format_eps(eps)} | {used:.6g} |")
        lines += ["", "## Attacks", ""] + [f"- `{n}`: {d}" for n, d in self.attacks.items()]
        lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in self.versions.items()]
        return "\n".join(lines) + "\n"

    def plot_png(self) -> bytes:
        """PNG bytes of robust accuracy against budget."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        xs = sorted(self.robust_accuracy)
        for name, acc in self.by_attack.items():
            ax.plot(xs, [acc.get(e, math.nan) for e in xs], marker="o", linewidth=1.2, label=name)
        ax.plot(xs, [self.robust_accuracy[e] for e in xs], marker="s", color="black", linewidth=2.2,
                label="worst case")
        ax.set_xlabel(f"eps ({self.norm})")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"clean {_pct(self.clean_accuracy)}, n={self.n_examples}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def save(self, directory: str | Path) -> Path:
        """Write ``report.json``, ``report.md`` and ``robust_accuracy.png`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.json", json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n")
        atomic_write_text(out / "report.md", self.to_markdown())
        atomic_write_bytes(out / "robust_accuracy.png", self.plot_png())
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_dict` output (``report.json``)."""

        def unkey(d: dict[str, float]) -> dict[float, float]:
            return {float(k): v for k, v in d.items()}

        return cls(
            clean_accuracy=data["clean_accuracy"],
            robust_accuracy=unkey(data["robust_accuracy"]),
            by_attack={n: unkey(v) for n, v in data["by_attack"].items()},
            n_examples=data["n_examples"],
            epsilons=list(data["epsilons"]),
            norm=data["norm"],
            bounds=tuple(data["bounds"]),  # type: ignore[arg-type]
            attacks=data["attacks"],
            seed=data["seed"],
            batch_size=data["batch_size"],
            device=data["device"],
            versions=data["versions"],
            timings=data["timings"],
            max_perturbation=unkey(data["max_perturbation"]),
            num_classes=data["num_classes"],
            warnings=list(data.get("warnings", [])),
            model=data.get("model"),
            data=data.get("data"),
            gradient_mode=data.get("gradient_mode"),
            defenses=list(data.get("defenses", [])),
        )


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"
