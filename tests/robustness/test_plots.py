"""The report's figures (robustness/plots.py): every line visible, titles inside the figure, a note when
nothing was broken. Judged on matplotlib's objects and on the rendered pixels."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

import robustness
from robustness import plots

EPS = [0.0, 0.1, 0.2, 0.3]
WORST = {0.0: 1.0, 0.1: 0.6, 0.2: 0.2, 0.3: 0.0}
# "pgd" and "apgd" both are the worst case (and each other), "fgsm" lies above: pgd and apgd used to vanish
BY_ATTACK = {"fgsm": {0.0: 1.0, 0.1: 0.8, 0.2: 0.5, 0.3: 0.3}, "pgd": dict(WORST), "apgd": dict(WORST)}


def _pixels(fig) -> np.ndarray:
    """The rendered figure as RGB floats (H, W, 3)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].astype(float) / 255


def test_every_attack_line_shows_even_where_it_is_the_worst_case() -> None:
    fig = plots.accuracy_figure(WORST, BY_ATTACK, norm="linf", clean_accuracy=1.0, n_examples=10)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    worst = lines.pop("worst case")
    assert list(lines) == list(BY_ATTACK)
    assert worst.get_alpha() < 0.5 and worst.get_marker() in ("None", None, "")  # a translucent band, beneath
    assert len({line.get_marker() for line in lines.values()}) == len(lines)  # a marker of its own each
    assert len({line.get_linestyle() for line in lines.values()}) == len(lines)
    for line in lines.values():
        assert line.get_zorder() > worst.get_zorder() and line.get_markerfacecolor() == "none"
    sizes = [line.get_markersize() for line in lines.values()]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)  # coinciding markers nest

    ax.get_legend().remove()  # the legend shows every colour anyway: look at the plotted lines only
    rgb = _pixels(fig)
    for name, line in lines.items():
        close = (np.abs(rgb - np.array(to_rgb(line.get_color()))).max(axis=2) < 0.1).sum()
        assert close > 100, f"{name} is hidden ({close} pixels of its colour)"


@pytest.mark.parametrize("count", [1, 2, 8])
def test_the_examples_titles_lie_inside_the_figure(count: int) -> None:
    example = {"clean": torch.rand(1, 8, 8), "adversarial": torch.rand(1, 8, 8), "index": 3, "label": 4,
               "adversarial_prediction": 7, "attack": "apgd-ce(restarts=2)", "eps": 0.5}
    fig = plots.examples_figure([example] * count, (0.0, 1.0))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [fig._suptitle, *(ax.title for ax in fig.axes)]
    assert fig._suptitle is not None and len(texts) == 1 + 3 * count
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, \
            f"{text.get_text()!r} is clipped: {extent} outside {box}"
    if count > 1:  # neighbouring columns' titles do not overlap
        first, second = (fig.axes[k].title.get_window_extent(renderer) for k in (count, count + 1))
        assert first.x1 < second.x0


def test_nothing_broken_still_writes_examples_png_with_a_note(trained_model, test_batch, tmp_path) -> None:
    x, y = test_batch[0][:8], test_batch[1][:8]
    report = robustness.evaluate(trained_model, (x, y), attacks=["fgsm"], epsilons=[0, 1e-9], progress=False,
                                 checks=False)
    assert report.examples == [] and report.worst_case == report.clean_accuracy  # nothing broke
    report.save(tmp_path)
    assert (tmp_path / "examples.png").read_bytes()[:4] == b"\x89PNG"
    fig = plots.examples_figure(report.examples, report.bounds)
    assert [t.get_text() for t in fig.texts] == [plots.NOTHING_BROKEN] and not fig.axes


def test_budgets_typed_as_fractions_label_the_axis_as_typed(monkeypatch) -> None:
    text = {0.0: "0", 2 / 255: "2/255", 8 / 255: "8/255"}
    worst = {e: 1.0 - i / 3 for i, e in enumerate(text)}
    fig = plots.accuracy_figure(worst, {"pgd": dict(worst)}, norm="linf", clean_accuracy=1.0, n_examples=3,
                                eps_text=text)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2/255", "8/255"]
    assert list(ax.get_xticks()) == pytest.approx(list(text))
    # through the report: epsilon_labels label the saved plot; a report of plain floats keeps numeric ticks
    from tests.robustness.test_cli import _fake_report

    plain = _fake_report("linf", worst=0.5)
    typed = dataclasses.replace(plain, epsilon_labels={0.1: "1/10"})
    seen = {}
    real = plots.accuracy_figure

    def spy(*args, **kwargs):
        seen.setdefault("eps_text", []).append(kwargs.get("eps_text"))
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "accuracy_figure", spy)
    plain.plot_png(), typed.plot_png()
    assert seen["eps_text"] == [None, {0.0: "0", 0.1: "1/10"}]
