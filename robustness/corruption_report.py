"""Accuracy under common corruptions, per corruption and severity, and its report.

:func:`evaluate_corruptions` runs a model over every (corruption, severity) of a
:class:`~robustness.corruptions.CorruptionData` and returns a :class:`CorruptionReport`: the accuracy
of each pair, the mean over corruptions at each severity, each corruption's mean over the severities,
the worst corruption, and the overall mean over every corruption and severity, which is RobustBench's
corruption accuracy (``corruptions_acc`` of its ``corruptions`` leaderboards, over the 15 standard
corruptions and 5 severities). The clean accuracy on the same images is measured when the clean test set
is given (:meth:`robustness.corruptions.CorruptionData.clean`), else the report says it was not.

``CorruptionReport.save(directory)`` writes, each atomically, in the format of
:class:`robustness.report.Report` where it applies (the same model, data, versions, seed, device,
timings and warnings blocks; ``"kind": "corruptions"``; "accuracy per severity" instead of "robust
accuracy per budget"):

* ``report.json``: everything, machine-readable; :meth:`CorruptionReport.from_dict` reads it back;
* ``report.md``: for humans, the table of corruptions by severity with a mean row;
* ``accuracy_per_severity.png``: accuracy against severity, one line per corruption and the mean.

Example::

    data = load_corruptions("cifar10-c", data_dir="~/data", n=1000)
    clean, note = data.clean()
    report = evaluate_corruptions(model, data, clean=clean)
    report.mean_accuracy, report.per_severity[5], report.worst_corruption
    report.save("report-c")
"""

from __future__ import annotations

import io
import logging
import math
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from robustness.claims import published_markdown
from robustness.errors import RobustnessWarning
from robustness.io import atomic_write_bytes, atomic_write_text, json_text
from robustness.model_info import ModelInfo

# torch is imported where a model is evaluated, not with this module: reports load without it
if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from robustness.corruptions import CorruptionData

__all__ = ["KIND", "PLOT_FILE", "CorruptionReport", "accuracy_per_severity_png", "evaluate_corruptions"]

log = logging.getLogger(__name__)

#: ``report.json``'s ``"kind"`` for a corruption evaluation
KIND = "corruptions"
#: the plot file :meth:`CorruptionReport.save` writes
PLOT_FILE = "accuracy_per_severity.png"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass
class CorruptionReport:
    """Accuracy of one model per corruption and severity (fractions in ``[0, 1]``).

    ``accuracy[corruption][severity]`` is the accuracy on that corruption at that severity, every pair
    measured on the same ``n_examples`` images. :attr:`per_severity` (mean over corruptions),
    :attr:`per_corruption` (mean over severities), :attr:`mean_accuracy` (over every pair: RobustBench's
    corruption accuracy when all 15 corruptions and 5 severities are in) and :attr:`worst_corruption`
    are derived from it. ``clean_accuracy`` is on the same images uncorrupted, ``None`` when not
    measured; ``clean_note`` says how it was measured or why not.
    """

    dataset: str
    accuracy: dict[str, dict[int, float]]
    n_examples: int
    num_classes: int
    seed: int
    batch_size: int
    device: str
    versions: dict[str, str]
    timings: dict[str, float]
    clean_accuracy: float | None = None
    clean_note: str = "not measured"
    bounds: tuple[float, float] = (0.0, 1.0)
    warnings: list[str] = field(default_factory=list)
    model: ModelInfo | None = None
    data: str | None = None
    kind: str = KIND
    published: dict[str, Any] | None = None

    @property
    def corruptions(self) -> list[str]:
        return list(self.accuracy)

    @property
    def severities(self) -> list[int]:
        return sorted({s for per in self.accuracy.values() for s in per})

    @property
    def per_severity(self) -> dict[int, float]:
        """Mean accuracy over the corruptions at each severity."""
        return {s: _mean([per[s] for per in self.accuracy.values() if s in per]) for s in self.severities}

    @property
    def per_corruption(self) -> dict[str, float]:
        """Mean accuracy over the severities of each corruption."""
        return {c: _mean(list(per.values())) for c, per in self.accuracy.items()}

    @property
    def mean_accuracy(self) -> float:
        """Mean accuracy over every corruption and severity (RobustBench's corruption accuracy)."""
        return _mean([a for per in self.accuracy.values() for a in per.values()])

    @property
    def worst_corruption(self) -> str:
        """The corruption with the lowest mean accuracy over the severities (the first on ties)."""
        means = self.per_corruption
        return min(means, key=lambda c: means[c])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; severities become strings (JSON keys), derived figures are written too."""
        worst = self.worst_corruption
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "mean_accuracy": self.mean_accuracy,
            "per_severity": {str(s): a for s, a in self.per_severity.items()},
            "per_corruption": self.per_corruption,
            "worst_corruption": {"name": worst, "accuracy": self.per_corruption[worst]},
            "accuracy": {c: {str(s): a for s, a in per.items()} for c, per in self.accuracy.items()},
            "corruptions": self.corruptions,
            "severities": self.severities,
            "clean_accuracy": self.clean_accuracy,
            "clean_note": self.clean_note,
            "n_examples": self.n_examples,
            "num_classes": self.num_classes,
            "bounds": list(self.bounds),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "versions": self.versions,
            "timings": self.timings,
            "warnings": self.warnings,
            "model": self.model.to_dict() if self.model is not None else None,
            "data": self.data,
            "published": self.published,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorruptionReport:
        """Rebuild a report from :meth:`to_dict` output (``report.json``); NaN was written ``null``."""
        if data.get("kind") != KIND:
            raise ValueError(f"not a corruption report: kind is {data.get('kind')!r}, expected {KIND!r}")
        clean = data.get("clean_accuracy")
        return cls(
            dataset=data["dataset"],
            accuracy={c: {int(s): (math.nan if a is None else float(a)) for s, a in per.items()}
                      for c, per in data["accuracy"].items()},
            n_examples=int(data["n_examples"]), num_classes=int(data["num_classes"]), seed=int(data["seed"]),
            batch_size=int(data["batch_size"]), device=str(data["device"]), versions=dict(data["versions"]),
            timings={k: (math.nan if v is None else float(v)) for k, v in data["timings"].items()},
            clean_accuracy=None if clean is None else float(clean), clean_note=str(data.get("clean_note", "")),
            bounds=tuple(data.get("bounds", (0.0, 1.0))),  # type: ignore[arg-type]
            warnings=list(data.get("warnings", [])), model=ModelInfo.from_dict(data.get("model")),
            data=data.get("data"), published=data.get("published"),
        )

    def set_published(self, claims: Mapping[str, Any] | None = None) -> list[str]:
        """Set the source's published figures beside ours (:func:`robustness.claims.published_comparison`, with
        the mean corruption accuracy as the robust figure); ``claims`` default to the model block's. Returns
        the loud warnings it adds to :attr:`warnings` (clean accuracy below the published one, corruption
        accuracy above it, beyond sampling noise), each also raised as a RobustnessWarning."""
        from robustness.claims import published_comparison

        if claims is None and self.model is not None:
            claims = self.model.claims
        self.published = published_comparison(
            claims, clean_accuracy=self.clean_accuracy, robust_accuracy={}, norm="corruptions", epsilons=[],
            n_examples=self.n_examples, corruptions_accuracy=self.mean_accuracy, data=self.data or self.dataset)
        new = [w for w in (self.published or {}).get("warnings", []) if w not in self.warnings]
        for message in new:
            warnings.warn(message, RobustnessWarning, stacklevel=2)
        self.warnings = [*self.warnings, *new]
        return new

    def table(self) -> str:
        """Markdown: one row per corruption, one column per severity and their mean; a mean row last."""
        levels = self.severities
        rows = ["| corruption | " + " | ".join(f"severity {s}" for s in levels) + " | mean |",
                "|---|" + "---:|" * (len(levels) + 1)]
        for c, per in self.accuracy.items():
            rows.append(f"| {c} | " + " | ".join(_pct(per.get(s)) for s in levels)
                        + f" | {_pct(self.per_corruption[c])} |")
        per = self.per_severity
        rows.append("| **mean** | " + " | ".join(f"**{_pct(per[s])}**" for s in levels)
                    + f" | **{_pct(self.mean_accuracy)}** |")
        return "\n".join(rows)

    def summary_line(self) -> str:
        """One line: the mean corruption accuracy, clean accuracy, worst corruption and size."""
        worst = self.worst_corruption
        clean = _pct(self.clean_accuracy) if self.clean_accuracy is not None else "not measured"
        return (f"mean corruption accuracy {_pct(self.mean_accuracy)} over {len(self.accuracy)} corruptions x "
                f"{len(self.severities)} severities (clean {clean}; worst: {worst} {_pct(self.per_corruption[worst])};"
                f" {self.n_examples} examples each)")

    def to_markdown(self) -> str:
        """The human-readable report."""
        worst = self.worst_corruption
        lines = [
            "# Corruption robustness report",
            "",
            *(self.model or ModelInfo()).markdown_lines(),
            f"- data: {self.data or self.dataset} ({self.n_examples} examples per corruption and severity, "
            f"{self.num_classes} classes)",
            f"- bounds: {list(self.bounds)}, seed: {self.seed}, device: {self.device}, batch size: {self.batch_size}",
            f"- clean accuracy: {_pct(self.clean_accuracy)} ({self.clean_note})",
            f"- mean corruption accuracy (over {len(self.accuracy)} corruptions and severities "
            f"{','.join(map(str, self.severities))}): {_pct(self.mean_accuracy)}",
            f"- worst corruption: {worst} ({_pct(self.per_corruption[worst])} mean over the severities)",
            f"- time: {self.timings.get('total', math.nan):.2f} s",
            "",
        ]
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        lines += published_markdown(self.published)
        lines += ["## Accuracy per severity", "",
                  "Each cell is the accuracy on one corruption at one severity (1 mildest, 5 strongest), every "
                  "cell on the same images; the mean row averages the corruptions, the mean column the "
                  "severities, and the bottom-right cell is the mean over every corruption and severity "
                  "(RobustBench's corruption accuracy when all 15 corruptions and 5 severities are in).", "",
                  self.table(), ""]
        lines += ["## Versions", ""] + [f"- {k}: {v}" for k, v in self.versions.items()]
        return "\n".join(lines) + "\n"

    def plot_png(self) -> bytes:
        """PNG bytes of accuracy against severity."""
        return accuracy_per_severity_png(self.accuracy, self.per_severity, clean_accuracy=self.clean_accuracy,
                                         n_examples=self.n_examples, dataset=self.dataset)

    def save(self, directory: str | Path) -> Path:
        """Write report.json, report.md and accuracy_per_severity.png into ``directory``, each atomically;
        an attack report's files left there from an earlier run (samples.csv, robust_accuracy.png,
        curve.png, examples.png) are removed, so the folder holds one report."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.json", json_text(self.to_dict(), indent=2))  # NaN -> null
        atomic_write_text(out / "report.md", self.to_markdown())
        atomic_write_bytes(out / PLOT_FILE, self.plot_png())
        for stale in ("samples.csv", "robust_accuracy.png", "curve.png", "examples.png"):
            (out / stale).unlink(missing_ok=True)
        return out


#: one marker per line, in order (then again); hollow, so that coinciding points all show
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_LINESTYLES = ("-", "--", "-.", ":")


def accuracy_per_severity_png(accuracy: Mapping[str, Mapping[int, float]], mean: Mapping[int, float], *,
                              clean_accuracy: float | None, n_examples: int, dataset: str) -> bytes:
    """Accuracy against severity: one thin line per corruption, the mean over them as a wide grey band
    under them, the clean accuracy (when measured) as a dotted line; titled with the data set and
    ``n_examples``. Matplotlib's object API on an Agg canvas (no pyplot state), as
    :mod:`robustness.plots`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    levels = sorted(mean)
    ax.plot(levels, [mean[s] for s in levels], color="black", alpha=0.22, linewidth=9, solid_capstyle="round",
            zorder=1, label="mean")
    for i, (name, per) in enumerate(accuracy.items()):
        ax.plot(levels, [per.get(s, math.nan) for s in levels], marker=_MARKERS[i % len(_MARKERS)],
                linestyle=_LINESTYLES[i % len(_LINESTYLES)], markersize=5, markerfacecolor="none",
                linewidth=1.1, zorder=3, label=name)
    if clean_accuracy is not None and not math.isnan(clean_accuracy):
        ax.axhline(clean_accuracy, color="grey", linestyle=":", linewidth=1.2, label="clean")
    ax.set_xticks(levels, [str(s) for s in levels])
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2 if len(accuracy) > 6 else 1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(f"{dataset}: mean {_pct(_mean(list(mean.values())))}, clean "
                 f"{_pct(clean_accuracy) if clean_accuracy is not None else 'not measured'}, "
                 f"n={n_examples}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _batches(dataset: Any, batch_size: int) -> Any:
    """``(x, y)`` batches of ``dataset`` in order: :class:`~robustness.corruptions.NpyRows` reads whole
    batches from its memory map, other datasets go through a DataLoader."""
    from torch.utils.data import DataLoader

    from robustness.data import iterate_batches

    if hasattr(dataset, "batch"):
        for start in range(0, len(dataset), batch_size):
            yield dataset.batch(start, min(start + batch_size, len(dataset)))
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=_generator())
    yield from iterate_batches(loader)


def _generator() -> Any:
    import torch

    return torch.Generator()  # a DataLoader's own: iterating it never touches the global RNG


def _accuracy(model: Any, dataset: Any, batch_size: int, device: Any, num_classes: int) -> tuple[float, int]:
    import torch

    from robustness.errors import InputError

    correct, count = torch.zeros((), dtype=torch.long, device=device), 0
    for x, y in _batches(dataset, batch_size):
        logits = model(x.to(device, non_blocking=True))
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise InputError(f"the model returned shape {tuple(logits.shape)} for a batch of {x.shape[0]}: it must "
                             "return logits (N, classes)")
        if logits.shape[1] < num_classes:
            raise InputError(f"the model returns {logits.shape[1]} classes but the data has {num_classes}")
        correct += (logits.argmax(dim=1) == y.to(device, torch.long, non_blocking=True)).sum()  # no host sync
        count += int(x.shape[0])
    return (int(correct) / count if count else math.nan), count


def evaluate_corruptions(
    model: nn.Module,
    data: CorruptionData,
    *,
    batch_size: int | None = None,
    device: Union[str, torch.device, None] = None,
    progress: bool = False,
    clean: Union[float, Dataset, None] = None,
    clean_note: str | None = None,
    model_info: ModelInfo | None = None,
) -> CorruptionReport:
    """Accuracy of ``model`` on every corruption and severity of ``data``.

    Args:
        model: an ``nn.Module`` mapping pixel-space inputs ``(N, C, H, W)`` in ``[0, 1]`` to logits
            (normalization inside it). It comes back in its own train/eval mode, on its own device,
            parameters and buffers untouched (evaluated in eval mode under ``torch.no_grad``).
        data: a :class:`~robustness.corruptions.CorruptionData`.
        batch_size: images per batch; ``None``: 256 (1,024 on CUDA).
        device: where to run; ``None`` keeps the model's device.
        progress: a tqdm bar over the (corruption, severity) pairs, on stderr.
        clean: the clean accuracy as a fraction, or a ``Dataset`` of the same images uncorrupted
            (:meth:`CorruptionData.clean`) to measure it on; ``None``: not measured.
        clean_note: how the clean images were found (the report's note); default from ``clean``.
        model_info: the report's model block; ``None``: :func:`robustness.model_info.describe_model`.

    Returns:
        A :class:`CorruptionReport`.

    Example::

        report = evaluate_corruptions(model, load_corruptions("cifar10-c", data_dir="~/data", n=500))
        print(report.table())
    """
    import torch
    from torch import nn

    from robustness.corruptions import CorruptionData
    from robustness.errors import InputError
    from robustness.model import evaluation_mode, model_device
    from robustness.records import package_versions
    from robustness.model_info import describe_model, warn_if_initial
    from robustness.validation import check_batch_size

    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    if not isinstance(data, CorruptionData):
        raise InputError(f"data must be a CorruptionData (robustness.corruptions.load_corruptions), got "
                         f"{type(data).__name__}")
    target = torch.device(device) if device is not None else model_device(model)
    if batch_size is None:
        batch_size = 1024 if target.type == "cuda" else 256
    check_batch_size(batch_size)
    info = model_info if model_info is not None else describe_model(model)
    notes = [] if model_info is not None else warn_if_initial(info)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    accuracy: dict[str, dict[int, float]] = {c: {} for c in data.corruptions}
    clean_accuracy: float | None = None
    note = clean_note
    pairs = list(data.pairs())
    from tqdm.auto import tqdm

    bar = tqdm(pairs, desc="corruptions", unit="pair", disable=not (progress and sys.stderr.isatty()))
    with evaluation_mode(model, target), torch.no_grad():
        if isinstance(clean, (int, float)) and not isinstance(clean, bool):
            if not 0 <= float(clean) <= 1:
                raise InputError(f"clean must be an accuracy in [0, 1] or a Dataset, got {clean!r}")
            clean_accuracy, note = float(clean), note or "given"
        elif clean is not None:
            t0 = time.perf_counter()
            clean_accuracy, count = _accuracy(model, clean, batch_size, target, data.num_classes)
            timings["clean"] = time.perf_counter() - t0
            if count != len(data):
                raise InputError(f"the clean data has {count} images but each corruption {len(data)}: give the "
                                 "same images uncorrupted (CorruptionData.clean())")
            note = note or "measured on the same images uncorrupted"
        for corruption, severity in bar:
            bar.set_postfix_str(f"{corruption} {severity}")
            t0 = time.perf_counter()
            acc, count = _accuracy(model, data.dataset(corruption, severity), batch_size, target, data.num_classes)
            if count != len(data):
                raise RuntimeError(f"{corruption} at severity {severity} gave {count} images, expected {len(data)}")
            accuracy[corruption][severity] = acc
            timings[corruption] = timings.get(corruption, 0.0) + time.perf_counter() - t0
            log.debug("%s severity %d: %.4f", corruption, severity, acc)
    bar.close()
    timings["total"] = time.perf_counter() - start
    warnings_given = list(notes)
    from robustness.corruptions import CORRUPTIONS, SEVERITIES

    if set(data.corruptions) != set(CORRUPTIONS) or tuple(sorted(data.severities)) != SEVERITIES:
        message = (f"evaluated {len(data.corruptions)} of the 15 standard corruptions at severities "
                   f"{','.join(map(str, data.severities))}: the mean is not comparable with RobustBench's corruption "
                   "accuracy (all 15 corruptions, severities 1-5)")
        warnings.warn(message, RobustnessWarning, stacklevel=2)
        warnings_given.append(message)
    return CorruptionReport(
        dataset=data.name, accuracy=accuracy, n_examples=len(data), num_classes=data.num_classes, seed=data.seed,
        batch_size=batch_size, device=str(target), versions=package_versions(), timings=timings,
        clean_accuracy=clean_accuracy, clean_note=note or "not measured", bounds=data.bounds,
        warnings=warnings_given, model=info, data=data.description)
