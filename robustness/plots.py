"""PNG figures of a report: robust accuracy against the budget, and a grid of examples.

Matplotlib's object API on an Agg canvas: no pyplot, no global figure state. The functions take
the report's figures as plain values (:class:`robustness.report.Report` passes its own), so this
module imports nothing from :mod:`robustness.report`.
"""

from __future__ import annotations

import io
import math
from typing import Any

__all__ = ["NOTHING_BROKEN", "accuracy_figure", "accuracy_png", "can_show_images", "comparison_figure",
           "comparison_png", "curve_figure", "curve_png", "curve_grid", "examples_figure", "examples_png"]


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


#: one marker per attack, in order (then again); hollow, so that coinciding points of several attacks all show
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
LINESTYLES = ("-", "--", "-.", ":")


def accuracy_png(robust_accuracy: dict[float, float], by_attack: dict[str, dict[float, float]], *, norm: str,
                 clean_accuracy: float, n_examples: int, eps_text: dict[float, str] | None = None) -> bytes:
    """:func:`accuracy_figure` as PNG bytes."""
    return _png(accuracy_figure(robust_accuracy, by_attack, norm=norm, clean_accuracy=clean_accuracy,
                                n_examples=n_examples, eps_text=eps_text))


def accuracy_figure(robust_accuracy: dict[float, float], by_attack: dict[str, dict[float, float]], *, norm: str,
                    clean_accuracy: float, n_examples: int, eps_text: dict[float, str] | None = None) -> Any:
    """Robust accuracy against the budget: one line per attack (``by_attack[name][eps]``) over the worst
    case (``robust_accuracy[eps]``); titled with the clean accuracy and ``n_examples``.

    The worst case equals the strongest attack's line wherever one attack breaks everything the
    others do, so it is drawn first, as a wide translucent grey band, and every attack on top of it
    with a line style and a hollow marker of its own, the markers shrinking from one attack to the
    next: lines that coincide stay visible, nested. ``eps_text`` (budget -> its text, e.g.
    ``"8/255"``), when given, labels the x ticks at the budgets as the user typed them. Returns a
    matplotlib ``Figure`` (Agg canvas).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = sorted(robust_accuracy)
    ax.plot(xs, [robust_accuracy[e] for e in xs], color="black", alpha=0.22, linewidth=9,
            solid_capstyle="round", zorder=1, label="worst case")
    for i, (name, acc) in enumerate(by_attack.items()):
        ax.plot(xs, [acc.get(e, math.nan) for e in xs], marker=MARKERS[i % len(MARKERS)],
                linestyle=LINESTYLES[i % len(LINESTYLES)], markersize=max(10 - 1.5 * i, 4),
                markerfacecolor="none", markeredgewidth=1.5, linewidth=1.4, zorder=3 + i, label=name)
    if eps_text:
        ax.set_xticks(xs, [eps_text.get(e, f"{e:g}") for e in xs], rotation=45 if len(xs) > 6 else 0)
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"clean {_pct(clean_accuracy)}, n={n_examples}")
    return fig


def comparison_png(series: dict[str, dict[float, float]], *, norm: str, eps_text: dict[float, str] | None = None,
                   title: str | None = None) -> bytes:
    """:func:`comparison_figure` as PNG bytes."""
    return _png(comparison_figure(series, norm=norm, eps_text=eps_text, title=title))


def comparison_figure(series: dict[str, dict[float, float]], *, norm: str, eps_text: dict[float, str] | None = None,
                      title: str | None = None) -> Any:
    """Several reports' worst-case robust accuracy against the budget: one line per report
    (``series[label][eps]``, budget 0 being the clean accuracy), each with a line style and a hollow marker of
    its own so that coinciding lines stay visible. ``eps_text`` labels the x ticks at the budgets (e.g.
    ``"8/255"``). Returns a matplotlib ``Figure`` (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    every = sorted({e for acc in series.values() for e in acc})
    for i, (label, acc) in enumerate(series.items()):
        xs = sorted(acc)
        ax.plot(xs, [acc[e] for e in xs], marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)],
                markersize=max(10 - 1.5 * (i % 5), 4), markerfacecolor="none", markeredgewidth=1.5, linewidth=1.4,
                zorder=3 + i, label=label)
    if eps_text and every:
        ax.set_xticks(every, [eps_text.get(e, f"{e:g}") for e in every], rotation=45 if len(every) > 6 else 0)
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("worst-case robust accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    ax.set_title(title or f"{norm}: {len(series)} report{'s' if len(series) != 1 else ''}")
    return fig


#: points of the fine grid the robustness curve is drawn on
CURVE_GRID_POINTS = 512


def curve_grid(breakpoints: list[tuple[float, float]], start: float, top: float,
               points: int = CURVE_GRID_POINTS) -> tuple[list[float], list[float]]:
    """The step curve of ``breakpoints`` (``(distance, accuracy from there on)``, ``start`` before the
    first) sampled on ``points`` evenly spaced budgets from 0 to ``top``, plus every breakpoint itself
    (so no step is lost between grid points): ``(budgets, accuracies)``, budgets increasing."""
    import bisect

    grid = [top * i / (points - 1) for i in range(points)] if top > 0 else [0.0]
    xs = sorted(set(grid) | {d for d, _ in breakpoints if d <= top})
    steps = [d for d, _ in breakpoints]
    ys = []
    for x in xs:
        i = bisect.bisect_right(steps, x)
        ys.append(start if i == 0 else breakpoints[i - 1][1])
    return xs, ys


def curve_png(breakpoints: list[tuple[float, float]], minimization: list[tuple[float, float]], *,
              clean_accuracy: float, fixed: dict[float, float], norm: str, n_examples: int, median: float,
              budgets: list[float]) -> bytes:
    """:func:`curve_figure` as PNG bytes."""
    return _png(curve_figure(breakpoints, minimization, clean_accuracy=clean_accuracy, fixed=fixed, norm=norm,
                             n_examples=n_examples, median=median, budgets=budgets))


def curve_figure(breakpoints: list[tuple[float, float]], minimization: list[tuple[float, float]], *,
                 clean_accuracy: float, fixed: dict[float, float], norm: str, n_examples: int, median: float,
                 budgets: list[float]) -> Any:
    """The robustness curve: robust accuracy against the budget as a step function on a fine grid
    (:func:`curve_grid`), over every attack (``breakpoints``) and from the minimization attacks alone
    (``minimization``), with the fixed-budget attacks' worst case at the budgets they ran at (``fixed``)
    as markers and the median distance as a dotted line. The x axis reaches past the largest finite
    distance and the largest listed budget. Returns a matplotlib ``Figure`` (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    far = max([d for d, _ in breakpoints + minimization] + list(budgets) + [0.0])
    top = 1.05 * far if far > 0 else 1.0
    xs, ys = curve_grid(breakpoints, clean_accuracy, top)
    ax.step(xs, ys, where="post", color="black", linewidth=2.2, alpha=0.5, label="all attacks")
    xs, ys = curve_grid(minimization, clean_accuracy, top)
    ax.step(xs, ys, where="post", color="tab:blue", linewidth=1.2, linestyle="--", label="minimization attacks")
    if fixed:
        es = sorted(fixed)
        ax.plot(es, [fixed[e] for e in es], linestyle="none", marker="o", markerfacecolor="none",
                markeredgewidth=1.5, color="tab:red", label="fixed-budget worst case")
    if math.isfinite(median):
        ax.axvline(median, color="grey", linestyle=":", linewidth=1, label=f"median distance {median:.3g}")
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("robust accuracy")
    ax.set_xlim(0, top)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"robustness curve: clean {_pct(clean_accuracy)}, n={n_examples}")
    return fig


def can_show_images(examples: list[dict[str, Any]]) -> bool:
    """The examples are images that a grid can show: ``(C, H, W)`` with 1 or 3 channels."""
    if not examples:
        return False
    shape = tuple(examples[0]["clean"].shape)
    return len(shape) == 3 and shape[0] in (1, 3)


#: what examples.png says when no attack broke any example
NOTHING_BROKEN = "no adversarial example found at any budget"


def examples_png(examples: list[dict[str, Any]], bounds: tuple[float, float]) -> bytes:
    """:func:`examples_figure` as PNG bytes."""
    return _png(examples_figure(examples, bounds))


def examples_figure(examples: list[dict[str, Any]], bounds: tuple[float, float]) -> Any:
    """Clean inputs (top), their verified adversarial examples (middle) and the perturbation
    rescaled to the full grey range (bottom), titled with the label, prediction and budget; with no
    examples, a figure that says :data:`NOTHING_BROKEN`. Returns a matplotlib ``Figure`` (Agg canvas).

    ``examples``: as ``Report.examples`` (``clean`` and ``adversarial`` images ``(C, H, W)`` in
    ``bounds``, ``index``, ``label``, ``adversarial_prediction``, ``attack``, ``eps``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    low, high = bounds
    cols = len(examples)
    # at least wide enough for the figure's title: one example alone clipped it
    fig = Figure(figsize=(max(1.6 * cols + 0.4, 4.0), 5.2 if cols else 1.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    if not examples:
        fig.text(0.5, 0.5, NOTHING_BROKEN, ha="center", va="center", fontsize=10)
        return fig
    for j, ex in enumerate(examples):
        clean = ((ex["clean"] - low) / (high - low)).clamp(0, 1)
        adv = ((ex["adversarial"] - low) / (high - low)).clamp(0, 1)
        delta = ex["adversarial"] - ex["clean"]
        scale = float(delta.abs().max()) or 1.0
        rows = [(clean, f"#{ex['index']} label {ex['label']}"),
                (adv, f"-> {ex['adversarial_prediction']}\n{ex['attack']}"),
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
    return fig
