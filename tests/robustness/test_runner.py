from __future__ import annotations

import copy
import io
import re
import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import robustness
from robustness.attacks import FGSM, PGD
from robustness.attacks.base import FixedBudgetAttack
from robustness.checks import CHECKS
from robustness.errors import InputError, RobustnessWarning


class TwoGates(nn.Module):
    """Class 1 wins when either coordinate of a 2-d input exceeds 0.8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = torch.relu(x[:, 0] - 0.8) + torch.relu(x[:, 1] - 0.8)
        return torch.stack([torch.full_like(score, 1e-3), score], dim=1)


@dataclass(frozen=True, kw_only=True)
class PushCoordinate(FixedBudgetAttack):
    """Adds eps to one coordinate: breaks exactly the samples that coordinate can flip."""

    name: ClassVar[str] = "push"
    norm: str = "linf"
    coord: int = 0

    def _run(self, model, x, y, *, eps, bounds, target, generator):
        out = x.clone()
        out[:, self.coord] += eps
        return out


def _two_groups() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[0.5, 0.1]] * 4 + [[0.1, 0.5]] * 4)
    return x, torch.zeros(8, dtype=torch.long)


def test_worst_case_is_per_sample_not_best_attack() -> None:
    x, y = _two_groups()
    report = robustness.evaluate(
        TwoGates(), (x, y), attacks=[PushCoordinate(coord=0), PushCoordinate(coord=1)], epsilons=[0.35]
    )
    assert report.clean_accuracy == 1.0
    assert report.by_attack["push"][0.35] == 0.5
    assert report.by_attack["push-2"][0.35] == 0.5
    assert report.robust_accuracy[0.35] == 0.0


def test_never_attacks_misclassified_or_already_broken_samples(trained_model, test_batch) -> None:
    x, y = test_batch
    seen: list[int] = []
    hook = trained_model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    report = robustness.evaluate(trained_model, (x, y), attacks=[FGSM()], epsilons=[0.05, 0.2], progress=False,
                                 checks=False)
    hook.remove()
    n = x.shape[0]
    n_correct = round(report.clean_accuracy * n)
    n_alive = round(report.by_attack["fgsm"][0.05] * n)
    assert n_correct < n, "the test needs some misclassified samples"
    # clean pass, then per budget one attack forward and one verification forward on survivors only
    assert seen == [n, n_correct, n_correct, n_alive, n_alive]


def test_robust_accuracy_is_verified_by_re_prediction(trained_model, test_batch) -> None:
    """An attack that lies about its output (returns far-out-of-budget inputs) is projected back."""

    @dataclass(frozen=True, kw_only=True)
    class Cheat(FixedBudgetAttack):
        name: ClassVar[str] = "cheat"
        norm: str = "linf"

        def __call__(self, model, x, y, **kwargs):  # bypasses the base class on purpose
            return torch.zeros_like(x)

        def _run(self, *args, **kwargs):  # pragma: no cover - never reached
            raise NotImplementedError

    x, y = test_batch
    report = robustness.evaluate(trained_model, (x, y), attacks=[Cheat()], epsilons=[0.01])
    assert report.robust_accuracy[0.01] > report.clean_accuracy - 0.05
    assert report.max_perturbation[0.01] <= 0.01 + 1e-6


# the model is only read, never changed, so sharing it across generated inputs is safe
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    eps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
)
def test_accuracy_never_rises_with_budget_nor_exceeds_clean(eps, seed, trained_model, test_batch) -> None:
    x, y = test_batch
    report = robustness.evaluate(
        trained_model, (x[:48], y[:48]), attacks=[FGSM(), PGD(steps=2)], epsilons=eps, seed=seed, progress=False
    )
    for curve in [report.robust_accuracy, *report.by_attack.values()]:
        values = [curve[e] for e in sorted(curve)]
        assert all(v <= report.clean_accuracy + 1e-12 for v in values)
        assert all(a >= b for a, b in zip(values, values[1:]))
    for e in report.robust_accuracy:
        assert report.robust_accuracy[e] <= min(c[e] for c in report.by_attack.values())


def test_same_seed_same_report_and_data_forms_agree(trained_model, test_batch) -> None:
    x, y = test_batch
    kwargs = dict(attacks=["pgd"], epsilons=[0.1], seed=7, batch_size=50, progress=False)
    a = robustness.evaluate(trained_model, (x, y), **kwargs)
    b = robustness.evaluate(trained_model, TensorDataset(x, y), **kwargs)
    c = robustness.evaluate(trained_model, DataLoader(TensorDataset(x, y), batch_size=50), **kwargs)
    d = robustness.evaluate(trained_model, (x.numpy(), y.numpy()), **kwargs)
    assert a.per_sample == b.per_sample == c.per_sample == d.per_sample
    assert a.robust_accuracy == b.robust_accuracy


def test_model_comes_back_unchanged(trained_model, test_batch) -> None:
    x, y = test_batch
    trained_model.train()
    trained_model.features[1].eval()  # a mixed mode must survive too
    before = {k: v.clone() for k, v in trained_model.state_dict().items()}
    modes = [m.training for m in trained_model.modules()]
    robustness.evaluate(trained_model, (x, y), attacks=["fgsm", "pgd"], epsilons=[0.1], progress=False)
    after = trained_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert modes == [m.training for m in trained_model.modules()]
    assert all(p.grad is None for p in trained_model.parameters())


def test_zero_budget_is_clean_accuracy(trained_model, test_batch) -> None:
    x, y = test_batch
    report = robustness.evaluate(trained_model, (x, y), attacks=["fgsm"], epsilons=[0, 0.1], progress=False)
    assert report.robust_accuracy[0.0] == report.clean_accuracy
    assert report.epsilons == [0.0, 0.1]


@pytest.mark.parametrize("eps", [[-0.1], [float("nan")], ["0.1"], [], [float("inf")]])
def test_bad_budgets(eps, trained_model, test_batch) -> None:
    with pytest.raises(InputError, match="budget|epsilons"):
        robustness.evaluate(trained_model, test_batch, attacks=["fgsm"], epsilons=eps)


def test_inputs_outside_bounds_name_the_range(trained_model, test_batch) -> None:
    x, y = test_batch
    with pytest.raises(InputError, match=r"\[-0\.5, 1\].*bounds \[0\.0, 1\.0\]"):
        robustness.evaluate(trained_model, (x - 0.5 * (x == 0), y), attacks=["fgsm"], epsilons=[0.1])


def test_nan_inputs(trained_model, test_batch) -> None:
    x, y = test_batch
    x = x.clone()
    x[3, 0, 2, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        robustness.evaluate(trained_model, (x, y), attacks=["fgsm"], epsilons=[0.1])


def test_labels_outside_classes(trained_model, test_batch) -> None:
    x, y = test_batch
    with pytest.raises(InputError, match="10 classes"):
        robustness.evaluate(trained_model, (x, y + 5), attacks=["fgsm"], epsilons=[0.1])


def test_outputs_must_be_n_by_classes(test_batch) -> None:
    x, y = test_batch
    with pytest.raises(InputError, match=r"\(N, classes\)"):
        robustness.evaluate(nn.Flatten(0), (x, y), attacks=["fgsm"], epsilons=[0.1])


def test_probability_outputs_warn(trained_model, test_batch) -> None:
    x, y = test_batch
    with pytest.warns(RobustnessWarning, match="probabilities"):
        report = robustness.evaluate(
            nn.Sequential(trained_model, nn.Softmax(dim=1)), (x, y), attacks=["fgsm"], epsilons=[0.1]
        )
    assert any("probabilities" in w for w in report.warnings)


def test_empty_data(trained_model) -> None:
    with pytest.raises(InputError, match="empty"):
        robustness.evaluate(trained_model, (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)),
                            attacks=["fgsm"], epsilons=[0.1])


def test_unknown_attack_and_wrong_norm(trained_model, test_batch) -> None:
    with pytest.raises(InputError, match="unknown attack 'nope'") as info:
        robustness.evaluate(trained_model, test_batch, attacks=["nope"], epsilons=[0.1])
    assert "standard" in str(info.value) and "art:" in str(info.value)  # says what else is accepted
    with pytest.raises(InputError, match="L2"):
        robustness.evaluate(trained_model, test_batch, attacks=["cw"], epsilons=[0.1], norm="linf")
    with pytest.raises(InputError, match="l2 norm but the sweep is linf"):
        robustness.evaluate(trained_model, test_batch, attacks=[PGD(norm="l2")], epsilons=[0.1])


def test_uint8_inputs_are_refused_with_advice(trained_model, test_batch) -> None:
    x, y = test_batch
    with pytest.raises(InputError, match="divide uint8"):
        robustness.evaluate(trained_model, ((x * 255).to(torch.uint8), y), attacks=["fgsm"], epsilons=[0.1])


def test_minimization_attack_answers_every_budget(trained_model, test_batch) -> None:
    from robustness.attacks import CarliniWagnerL2

    x, y = test_batch[0][:32], test_batch[1][:32]
    cw = CarliniWagnerL2(binary_search_steps=3, steps=30)
    seen: list[int] = []
    hook = trained_model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    report = robustness.evaluate(trained_model, (x, y), attacks=[cw], epsilons=[0.5, 1.0, 2.0], norm="l2",
                                 checks=False)
    hook.remove()
    calls_per_budget_sweep = len(seen)
    accs = [report.by_attack["cw"][e] for e in (0.5, 1.0, 2.0)]
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[2] < report.clean_accuracy
    assert all(report.max_perturbation[e] <= e for e in (0.5, 1.0, 2.0))
    # run once for all budgets: the call count does not depend on how many budgets there are
    seen.clear()
    hook = trained_model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    robustness.evaluate(trained_model, (x, y), attacks=[cw], epsilons=[1.0], norm="l2", checks=False)
    hook.remove()
    assert len(seen) == calls_per_budget_sweep
    assert np.isclose(report.by_attack["cw"][1.0],
                      robustness.evaluate(trained_model, (x, y), attacks=[cw], epsilons=[1.0],
                                          norm="l2").by_attack["cw"][1.0])


def test_global_random_states_are_untouched(trained_model, test_batch) -> None:
    import random

    import numpy as np

    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    robustness.evaluate(trained_model, test_batch, attacks=["fgsm", "pgd"], epsilons=[0.1], progress=False)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]


@pytest.mark.parametrize("budgets", [[0.05], [0.05, 0.1], [0.03, 0.06, 0.1, 0.15, 0.2]])
def test_bisect_schedule_is_monotone_verified_and_attacks_each_sample_at_most_log_times(
    trained_model, test_batch, budgets
) -> None:
    import math

    x, y = test_batch
    calls: list[int] = []

    @dataclass(frozen=True, kw_only=True)
    class Counting(FixedBudgetAttack):
        name: ClassVar[str] = "counting"
        norm: str = "linf"

        def _run(self, model, x, y, *, eps, bounds, target, generator):
            calls.append(x.shape[0])
            return PGD(steps=5)(model, x, y, eps=eps, bounds=bounds, generator=generator)

    report = robustness.evaluate(trained_model, (x, y), attacks=[Counting()], epsilons=budgets, progress=False,
                                 checks=False, schedule="bisect")
    curve = [report.robust_accuracy[e] for e in budgets]
    assert all(a >= b for a, b in zip(curve, curve[1:])) and curve[0] <= report.clean_accuracy
    n_correct = round(report.clean_accuracy * x.shape[0])
    rounds = math.ceil(math.log2(len(budgets) + 1))
    assert sum(calls) <= n_correct * rounds  # each correct sample attacked at most ceil(log2(k + 1)) times
    assert report.schedule == "bisect"
    # every broken sample was verified at the budget it is counted at
    for name, per_eps in report.perturbation.items():
        for e, stats in per_eps.items():
            assert stats["count"] == 0 or stats["max"] <= e + 1e-6


def test_bisect_and_ascending_agree_on_one_budget_and_bisect_is_close_on_many(trained_model, test_batch) -> None:
    x, y = test_batch
    kw = dict(attacks=[PGD(steps=10)], progress=False, checks=False)
    one_a = robustness.evaluate(trained_model, (x, y), epsilons=[0.1], **kw)
    one_b = robustness.evaluate(trained_model, (x, y), epsilons=[0.1], schedule="bisect", **kw)
    assert one_a.per_sample == one_b.per_sample  # a single budget: the same attack, the same seed
    budgets = [0.05, 0.1, 0.15, 0.2]
    asc = robustness.evaluate(trained_model, (x, y), epsilons=budgets, **kw)
    bis = robustness.evaluate(trained_model, (x, y), epsilons=budgets, schedule="bisect", **kw)
    assert all(abs(asc.robust_accuracy[e] - bis.robust_accuracy[e]) <= 0.05 for e in budgets)
    with pytest.raises(InputError, match="schedule"):
        robustness.evaluate(trained_model, (x, y), epsilons=budgets, schedule="random", **kw)


def test_out_of_memory_halves_the_batch_and_keeps_finished_work(trained_model, test_batch, caplog) -> None:
    """A batch too big for the device is split and retried; the result equals a run at the size that fits."""
    x, y = test_batch

    class Limited(nn.Module):
        def __init__(self, model: nn.Module, limit: int) -> None:
            super().__init__()
            self.model, self.limit, self.failures = model, limit, 0

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            if inputs.shape[0] > self.limit:
                self.failures += 1
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.model(inputs)

    kw = dict(attacks=["fgsm", PGD(steps=3)], epsilons=[0.05, 0.1], progress=False, checks=False)
    limited = Limited(trained_model, limit=20)
    split = robustness.evaluate(limited, (x, y), batch_size=64, **kw)
    fits = robustness.evaluate(trained_model, (x, y), batch_size=16, **kw)
    assert split.per_sample == fits.per_sample and split.robust_accuracy == fits.robust_accuracy
    assert limited.failures == 2  # 64 and 32 failed once; every later range used 16 directly
    assert split.batch_size == 16
    assert "out of GPU memory" in caplog.text

    with pytest.raises(InputError, match="one example does not fit"):
        robustness.evaluate(Limited(trained_model, limit=0), (x, y), batch_size=8, **kw)


def test_batch_size_is_chosen_when_not_given(trained_model, digits) -> None:
    """Without batch_size the runner chooses: 256 per batch on the CPU (on CUDA, the largest that fits)."""
    from robustness.runner import AUTO_BATCH_CPU

    x, y = digits[2][:300], digits[3][:300]
    report = robustness.evaluate(trained_model, (x, y), attacks=["fgsm"], epsilons=[0.1], progress=False,
                                 checks=False)
    assert report.batch_size == AUTO_BATCH_CPU == 256
    explicit = robustness.evaluate(trained_model, (x, y), attacks=["fgsm"], epsilons=[0.1], progress=False,
                                   checks=False, batch_size=256)
    assert report.robust_accuracy == explicit.robust_accuracy  # the same batches, so the same result


@dataclass(frozen=True, kw_only=True)
class NaNEveryOther(FixedBudgetAttack):
    """Returns NaN for every other input (a numerically broken attack); the rest are pushed by eps."""

    name: ClassVar[str] = "nan-every-other"
    norm: str = "linf"

    def _run(self, model, x, y, *, eps, bounds, target, generator):
        out = (x + eps).clone()
        out[::2] = float("nan")
        return out


def test_non_finite_adversarial_inputs_never_count_as_broken() -> None:
    """A NaN input makes argmax disagree with the label by accident: it must not count as a break."""
    x, y = _two_groups()  # every sample flips when pushed by 0.4 on both coordinates
    model = TwoGates()
    with pytest.warns(RobustnessWarning, match="NaN or infinite values for 4 of 8 inputs"):
        report = robustness.evaluate(model, (x, y), attacks=[NaNEveryOther()], epsilons=[0.4], progress=False,
                                     checks=False)
    assert report.clean_accuracy == 1.0
    assert report.robust_accuracy[0.4] == 0.5  # only the pushed half is broken
    assert report.max_perturbation[0.4] == pytest.approx(0.4)  # a number, never NaN


def test_a_float64_model_gets_float64_inputs(trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    seen: list[torch.dtype] = []
    model64 = copy.deepcopy(trained_model).double()
    model64.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    report = robustness.evaluate(model64, (x, y), attacks=["fgsm", "pgd(steps=2)"], epsilons=[0.1],
                                 progress=False, checks=False)
    reference = robustness.evaluate(trained_model, (x, y), attacks=["fgsm", "pgd(steps=2)"], epsilons=[0.1],
                                    progress=False, checks=False)
    assert seen and set(seen) == {torch.float64}
    assert report.clean_accuracy == reference.clean_accuracy
    assert abs(report.robust_accuracy[0.1] - reference.robust_accuracy[0.1]) <= 2 / 32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_refused_with_advice(trained_model, test_batch, dtype) -> None:
    model = copy.deepcopy(trained_model).to(dtype)
    with pytest.raises(InputError, match=r"half precision.*model.float\(\).*amp='bf16'"):
        robustness.evaluate(model, test_batch, attacks=["fgsm"], epsilons=[0.1], progress=False)


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal: tqdm draws its bars into it."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("progress, tty", [(True, True), (False, True), (True, False)])
def test_progress_bars_have_a_total_and_stay_quiet_when_asked_or_not_a_terminal(trained_model, test_batch,
                                                                                monkeypatch, progress, tty) -> None:
    stderr = _Terminal(tty)
    monkeypatch.setattr(sys, "stderr", stderr)
    x, y = test_batch[0][:40], test_batch[1][:40]  # 3 batches of 16, 16 and 8
    robustness.evaluate(trained_model, (x, y), attacks=["fgsm"], epsilons=[0, 0.1], batch_size=16,
                        progress=progress)
    text = stderr.getvalue()
    if not (progress and tty):
        assert text == ""
        return
    checks = len(CHECKS)
    assert "evaluate: 100%" in text and "| 3/3 [" in text  # the total, hence the time left: [elapsed<left, ...]
    assert re.search(r"evaluate:\s+0%\|\s+\| 0/3 \[00:00<\?", text)
    assert "checks: 100%" in text and f"| {checks}/{checks} [" in text
