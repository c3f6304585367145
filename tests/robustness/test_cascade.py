"""Cascade mode (EvalConfig.cascade): each attack only on the samples the earlier ones left robust."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import robustness
from robustness.attacks import FGSM, PGD
from robustness.attacks.base import AttackKind, FixedBudgetAttack, MinimizationAttack
from robustness.attacks.fgsm import gradient_step
from robustness.attacks.losses import objective
from robustness.config import EvalConfig
from robustness.report import Report

BUDGETS = [0.02, 0.05, 0.1, 0.2]


@dataclass(frozen=True, kw_only=True)
class RecordingFGSM(FixedBudgetAttack):
    """FGSM on the margin loss that records, per call, the budget and the inputs it was given."""

    name: ClassVar[str] = "recording"
    kind: ClassVar[AttackKind] = "single-step"
    norm: str = "linf"
    calls: list = field(compare=False)

    def _run(self, model, x, y, *, eps, bounds, target, generator):
        self.calls.append((eps, x.clone()))
        x_in = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(model(x_in), y, "margin", target).sum(), x_in)
        return gradient_step(x, grad, eps, self.norm)


@dataclass(frozen=True, kw_only=True)
class RecordingMinimizer(MinimizationAttack):
    """A minimization attack that records the per-sample budgets it is told; it finds nothing."""

    name: ClassVar[str] = "recording-min"
    kind: ClassVar[AttackKind] = "minimization"
    stops_at_eps: ClassVar[bool] = True
    norm: str = "linf"
    calls: list = field(compare=False)

    def _run(self, model, x, y, *, bounds, target, generator, eps=None):
        self.calls.append((eps, x.clone()))
        return x.clone()


def _rows(seen: Tensor, data: Tensor) -> list[int]:
    """The positions in ``data`` of the rows of ``seen`` (every row of data is distinct)."""
    match = (seen.flatten(1)[:, None, :] == data.flatten(1)[None, :, :]).all(dim=2)
    assert bool((match.sum(dim=1) == 1).all())
    return match.float().argmax(dim=1).tolist()


@pytest.fixture()
def batch(test_batch) -> tuple[Tensor, Tensor]:
    x, y = test_batch[0][:96], test_batch[1][:96]
    assert torch.unique(x.flatten(1), dim=0).shape[0] == x.shape[0]
    return x, y


@pytest.mark.parametrize("schedule", ["ascending", "bisect"])
def test_an_attack_never_runs_on_a_sample_already_broken_at_that_budget(trained_model, batch, schedule) -> None:
    x, y = batch
    calls: list = []
    report = robustness.evaluate(trained_model, (x, y), attacks=[PGD(steps=3), RecordingFGSM(calls=calls)],
                                 epsilons=[0, *BUDGETS], cascade=True, schedule=schedule, checks=False, progress=False)
    earlier = report.per_sample["broken_at:pgd"]
    correct = [p == t for p, t in zip(report.per_sample["clean_prediction"], report.per_sample["label"])]
    assert calls, "the recording attack never ran: the test needs samples PGD leaves robust"
    attacked = set()
    for eps, seen in calls:
        i = BUDGETS.index(eps)
        for row in _rows(seen, x):
            assert correct[row] and earlier[row] > i, f"sample {row} attacked at eps={eps} though already broken"
            attacked.add((row, i))
    if schedule == "ascending":  # and every sample still unbroken there is attacked (by both in turn)
        ours = report.per_sample["broken_at:recording"]
        expected = {(r, i) for r in range(len(y)) for i in range(len(BUDGETS))
                    if correct[r] and earlier[r] > i and ours[r] >= i}
        assert attacked == expected


def test_a_minimization_attack_gets_the_largest_budget_where_each_sample_is_unbroken(trained_model, batch) -> None:
    x, y = batch
    calls: list = []
    report = robustness.evaluate(trained_model, (x, y), attacks=[FGSM(), RecordingMinimizer(calls=calls)],
                                 epsilons=[0, *BUDGETS], cascade=True, checks=False, progress=False)
    (eps, seen), = calls
    earlier = report.per_sample["broken_at:fgsm"]
    correct = [p == t for p, t in zip(report.per_sample["clean_prediction"], report.per_sample["label"])]
    rows = _rows(seen, x)
    assert sorted(rows) == [r for r in range(len(y)) if correct[r] and earlier[r] > 0]  # broken everywhere: skipped
    assert any(earlier[r] < len(BUDGETS) for r in rows), "the test needs samples FGSM broke at a larger budget"
    assert eps.tolist() == pytest.approx([BUDGETS[earlier[r] - 1] for r in rows])
    alone: list = []  # not cascaded: every correct sample, at the largest budget
    robustness.evaluate(trained_model, (x, y), attacks=[FGSM(), RecordingMinimizer(calls=alone)],
                        epsilons=[0, *BUDGETS], checks=False, progress=False)
    assert alone[0][0] == max(BUDGETS) and alone[0][1].shape[0] == sum(correct)


def test_deterministic_per_sample_attacks_give_the_same_worst_case_cascaded_or_not(trained_model, batch) -> None:
    # FGSM is deterministic and treats each sample on its own: whether a sample is attacked cannot
    # change what another one gets, so the per-sample worst case must be the same
    x, y = batch
    attacks = [FGSM(), FGSM(loss="margin"), FGSM(norm="linf", loss="ce")]
    settings = dict(epsilons=[0, *BUDGETS], checks=False, progress=False)
    plain = robustness.evaluate(trained_model, (x, y), attacks=attacks, **settings)
    cascaded = robustness.evaluate(trained_model, (x, y), attacks=attacks, cascade=True, **settings)
    assert cascaded.robust_accuracy == plain.robust_accuracy
    assert cascaded.per_sample["broken_at:worst"] == plain.per_sample["broken_at:worst"]
    assert cascaded.cumulative == plain.cumulative
    # cheaper: the later attacks see fewer samples
    later = list(cascaded.model_calls)[1:]
    assert all(cascaded.model_calls[k]["samples"] < plain.model_calls[k]["samples"] for k in later)


def test_the_report_marks_the_per_attack_figures_cumulative(trained_model, batch, tmp_path) -> None:
    x, y = batch
    report = robustness.evaluate(trained_model, (x, y), attacks=[FGSM(), PGD(steps=3)], epsilons=[0, 0.05, 0.1],
                                 cascade=True, checks=False, progress=False)
    assert report.cascade and report.by_attack == report.cumulative
    assert report.by_attack["pgd"] == report.robust_accuracy  # the last cumulative column is the worst case
    table = report.table()
    assert "| + fgsm | + pgd |" in table and "cumulative" in table
    assert "cascade: yes" in report.to_markdown()
    data = report.to_dict()
    assert data["cascade"] is True and data["by_attack_cumulative"] is True
    assert Report.from_dict(json.loads(json.dumps(data))).cascade is True
    plain = robustness.evaluate(trained_model, (x, y), attacks=[FGSM(), PGD(steps=3)], epsilons=[0, 0.05, 0.1],
                                checks=False, progress=False)
    assert not plain.cascade and plain.to_dict()["by_attack_cumulative"] is False and "+ fgsm" not in plain.table()


def test_the_state_fingerprint_records_the_cascade() -> None:
    on = EvalConfig(attacks="standard-nofab", epsilons=[0.1])
    off = EvalConfig(attacks="standard-nofab", epsilons=[0.1], cascade=False)
    assert on.fingerprint(8)["cascade"] is True and "cascade" not in off.fingerprint(8)


def test_iterative_vs_single_step_check_counts_only_samples_the_iterative_attack_saw(trained_model, batch) -> None:
    # cascaded, PGD never runs on what FGSM (first) broke: that is no sign of a weak PGD
    x, y = batch
    report = robustness.evaluate(trained_model, (x, y), attacks=[FGSM(), PGD(steps=10)], epsilons=[0, 0.05, 0.1],
                                 cascade=True, progress=False)
    check = {c.name: c for c in report.checks}["iterative-vs-single-step"]
    assert check.status == "passed", check.message


class _Noisy(nn.Module):
    """The trained model behind Gaussian input noise from its own seeded generator (reseeded by the runner)."""

    randomized = True

    def __init__(self, model: nn.Module, std: float) -> None:
        super().__init__()
        self.model, self.std = model, std
        self.gen = torch.Generator().manual_seed(0)

    def reseed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def rng_state(self) -> Tensor:
        return self.gen.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.gen.set_state(state)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + self.std * torch.randn(x.shape, generator=self.gen))


def test_the_randomized_model_check_points_to_the_rand_preset_and_passes_with_eot(trained_model, batch) -> None:
    x, y = batch[0][:32], batch[1][:32]
    noisy = _Noisy(trained_model, 0.3)
    plain = robustness.evaluate(noisy, (x, y), attacks=[PGD(steps=2)], epsilons=[0, 0.1], progress=False)
    check = {c.name: c for c in plain.checks}["randomized-model"]
    assert check.status == "warning" and "rand preset" in check.message and "eot_samples" in check.message
    eot = robustness.evaluate(noisy, (x, y), attacks=[PGD(steps=2, eot_samples=2)], epsilons=[0, 0.1], progress=False)
    check = {c.name: c for c in eot.checks}["randomized-model"]
    assert check.status == "passed" and "2 draws" in check.message
