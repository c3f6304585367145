"""PNG figures of a report: robust accuracy against the budget, and a grid of examples.

Matplotlib's object API on an Agg canvas: no pyplot, no global figure state. The functions take
the report's figures as plain values (:class:`robustness.report.Report` passes its own), so this
module imports nothing from :mod:`robustness.report`.
"""

from __future__ import annotations

import io
import math
from typing import Any

__all__ = ["accuracy_png", "examples_png", "can_show_images"]


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def accuracy_png(robust_accuracy: dict[float, float], by_attack: dict[str, dict[float, float]], *, norm: str,
                 clean_accuracy: float, n_examples: int) -> bytes:
    """Robust accuracy against the budget: one line per attack (``by_attack[name][eps]``), the worst
    case (``robust_accuracy[eps]``) in black; titled with the clean accuracy and ``n_examples``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = sorted(robust_accuracy)
    for name, acc in by_attack.items():
        ax.plot(xs, [acc.get(e, math.nan) for e in xs], marker="o", linewidth=1.2, label=name)
    ax.plot(xs, [robust_accuracy[e] for e in xs], marker="s", color="black", linewidth=2.2,
            label="worst case")
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"clean {_pct(clean_accuracy)}, n={n_examples}")
    fig.tight_layout()
    return _png(fig)


def can_show_images(examples: list[dict[str, Any]]) -> bool:
    """The examples are images that a grid can show: ``(C, H, W)`` with 1 or 3 channels."""
    if not examples:
        return False
    shape = tuple(examples[0]["clean"].shape)
    return len(shape) == 3 and shape[0] in (1, 3)


def examples_png(examples: list[dict[str, Any]], bounds: tuple[float, float]) -> bytes:
    """Clean inputs (top), their verified adversarial examples (middle) and the perturbation
    rescaled to the full grey range (bottom), titled with the label, prediction and budget.

    ``examples``: as ``Report.examples`` (``clean`` and ``adversarial`` images ``(C, H, W)`` in
    ``bounds``, ``index``, ``label``, ``adversarial_prediction``, ``attack``, ``eps``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    low, high = bounds
    cols = len(examples)
    fig = Figure(figsize=(1.6 * cols + 0.4, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    for j, ex in enumerate(examples):
        clean = ((ex["clean"] - low) / (high - low)).clamp(0, 1)
        adv = ((ex["adversarial"] - low) / (high - low)).clamp(0, 1)
        delta = ex["adversarial"] - ex["clean"]
        scale = float(delta.abs().max()) or 1.0
        rows = [(clean, f"#{ex['index']} label {ex['label']}"),
                (adv, f"-> {ex['adversarial_prediction']} ({ex['attack']})"),
                ((delta / (2 * scale) + 0.5).clamp(0, 1), f"eps {ex['eps']:.4g}")]
        for i, (img, title) in enumerate(rows):
            ax = fig.add_subplot(3, cols, i * cols + j + 1)
            arr = img.permute(1, 2, 0).numpy()
            if arr.shape[2] == 1:
                ax.imshow(arr[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(arr, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle("clean / adversarial / perturbation (rescaled)", fontsize=9)
    fig.tight_layout()
    return _png(fig)
