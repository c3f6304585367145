"""Invariants of the figures derived from per-sample results (hypothesis over random outcomes)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustness import summary


@st.composite
def outcomes(draw):
    n = draw(st.integers(1, 40))
    k = draw(st.integers(1, 4))  # budgets > 0
    attacks = draw(st.integers(1, 3))
    classes = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    correct = torch.rand(n, generator=g) < 0.8
    budgets = sorted({round(0.05 * (i + 1), 4) for i in range(k)})
    broken = {}
    size = {}
    for a in range(attacks):
        b = torch.randint(0, len(budgets) + 1, (n,), generator=g)
        b[~correct] = len(budgets)  # misclassified samples are never attacked
        broken[f"a{a}"] = b
        eps_t = torch.tensor(budgets + [math.nan])
        s = torch.rand(n, generator=g) * eps_t[b]  # within the budget that broke it
        size[f"a{a}"] = torch.where(b < len(budgets), s, torch.full_like(s, math.nan))
    return labels, correct, budgets, broken, size, classes


@settings(max_examples=60, deadline=None)
@given(outcomes())
def test_curves_never_rise_and_never_exceed_clean(case) -> None:
    labels, correct, budgets, broken, _, _ = case
    eps = [0.0] + budgets
    for b in broken.values():
        curve = summary.accuracy_curve(correct, b, eps, budgets)
        values = [curve[e] for e in eps]
        assert all(x >= y for x, y in zip(values, values[1:]))
        assert values[0] == int(correct.sum()) / correct.numel()


@settings(max_examples=60, deadline=None)
@given(outcomes())
def test_cumulative_falls_with_each_attack_and_ends_at_the_worst_case(case) -> None:
    labels, correct, budgets, broken, _, _ = case
    eps = [0.0] + budgets
    cum = summary.cumulative(broken, correct, eps, budgets)
    names = list(broken)
    first = summary.accuracy_curve(correct, broken[names[0]], eps, budgets)
    assert cum[names[0]] == first
    for prev, nxt in zip(names, names[1:]):
        assert all(cum[nxt][e] <= cum[prev][e] for e in eps)
    worst = torch.stack(list(broken.values())).amin(0)
    assert cum[names[-1]] == summary.accuracy_curve(correct, worst, eps, budgets)
    for name in names:  # never above any single attack included so far
        assert all(cum[names[-1]][e] <= summary.accuracy_curve(correct, broken[name], eps, budgets)[e] for e in eps)


@settings(max_examples=60, deadline=None)
@given(outcomes())
def test_per_class_figures_add_up_to_the_overall_ones(case) -> None:
    labels, correct, budgets, broken, _, classes = case
    eps = [0.0] + budgets
    worst = torch.stack(list(broken.values())).amin(0)
    overall = summary.accuracy_curve(correct, worst, eps, budgets)
    per = summary.per_class(labels, correct, worst, eps, budgets, classes)
    assert sum(v["n"] for v in per.values()) == labels.numel()
    assert set(per) == set(labels.unique().tolist())  # absent classes are left out, not zero
    for e in eps:
        weighted = sum(v["n"] * v["robust"][e] for v in per.values()) / labels.numel()
        assert math.isclose(weighted, overall[e], abs_tol=1e-9)
    assert all(v["robust"][max(eps)] <= v["clean"] for v in per.values())


@settings(max_examples=60, deadline=None)
@given(outcomes())
def test_perturbation_stats_count_the_broken_samples_and_stay_inside_each_budget(case) -> None:
    labels, correct, budgets, broken, size, _ = case
    stats = summary.perturbation_stats(broken, size, budgets)
    for name, per_eps in stats.items():
        counts = [per_eps[e]["count"] for e in budgets]
        assert counts == sorted(counts)  # more samples broken within a larger budget
        for i, e in enumerate(budgets):
            st_ = per_eps[e]
            assert st_["count"] == int((broken[name] <= i).sum())
            if st_["count"]:
                assert st_["median"] <= st_["max"] <= e + 1e-9
            else:
                assert math.isnan(st_["median"]) and math.isnan(st_["max"])
