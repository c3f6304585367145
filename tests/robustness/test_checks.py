"""The sanity checks of robustness.checks: each one triggered by a model (or a report) that
should trigger it, and quiet on the trained tiny CNN; strict mode; the model left untouched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robustness.attacks import FGSM, PGD
from robustness.attacks.apgd import APGDT
from robustness.attacks.base import AttackKind, FixedBudgetAttack
from robustness.defenses import BitDepth, GaussianNoise, defend
from robustness.checks import CHECKS, run_checks
from robustness.errors import InputError
from robustness.registry import Registry
from robustness.report import CHECK_STATUSES
from tests.conftest import TinyCNN

N = 64
EPS = [0.0, 0.1, 0.2, 0.3]
NAMES = [name for name, _ in CHECKS]


def _inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: dict[str, Any],
            epsilons: list[float] = EPS, norm: str = "linf") -> dict[str, Any]:
    """Everything run_checks needs, from a sweep of ``attacks`` over ``epsilons`` as the runner does it:
    per attack and sample, the index of the first budget that broke it (``len(budgets)``: never)."""
    budgets = [e for e in epsilons if e > 0]
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
    broken_at = {}
    for a, (name, attack) in enumerate(attacks.items()):
        broken, alive = torch.full((x.shape[0],), len(budgets)), correct.nonzero().squeeze(1)
        for i, eps in enumerate(budgets):
            adv = attack(model, x[alive], y[alive], eps=eps, generator=torch.Generator().manual_seed(10 * a + i))
            with torch.no_grad():
                fooled = model(adv).argmax(dim=1) != y[alive]
            broken[alive[fooled]] = i
            alive = alive[~fooled]
        broken_at[name] = broken

    def curve(broken: torch.Tensor) -> dict[float, float]:
        still = {e: correct if e == 0 else correct & (broken > budgets.index(e)) for e in epsilons}
        return {e: s.float().mean().item() for e, s in still.items()}

    worst = torch.stack(list(broken_at.values())).amin(dim=0)
    return dict(attacks=attacks, broken_at=broken_at, correct=correct, budgets=budgets, robust_accuracy=curve(worst),
                by_attack={k: curve(v) for k, v in broken_at.items()}, norm=norm, bounds=(0.0, 1.0),
                num_classes=10, seed=0)


def _by_name(checks: list[Any]) -> dict[str, Any]:
    return {c.name: c for c in checks}


def _run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
    return _by_name(run_checks(model, x, y, **kwargs))


@pytest.fixture(scope="module")
def subset(digits) -> tuple[torch.Tensor, torch.Tensor]:
    return digits[2][:N], digits[3][:N]


@pytest.fixture(scope="module")
def model(_trained_state) -> nn.Module:
    net = TinyCNN()
    net.load_state_dict(_trained_state)
    return net.eval()


@pytest.fixture(scope="module")
def clean(model, subset) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trained CNN evaluated with FGSM and a 20-step PGD with 5 restarts: its kwargs and its checks."""
    kwargs = _inputs(model, *subset, attacks={"fgsm": FGSM(), "pgd": PGD(steps=20, restarts=5)})
    return kwargs, _run(model, *subset, **kwargs)


class Quantized(nn.Module):
    """Binarizes its input with torch.round before the model: gradients are zero almost everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x))


class Noisy(nn.Module):
    """Adds fresh Gaussian noise from the global RNG on every call: randomized, with no EOT declared."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + 0.2 * torch.randn_like(x))


class Purifier(nn.Module):
    """A dynamic defense: one gradient step on the input inside forward, then the model."""

    def __init__(self, model: nn.Module, use_backward: bool = False) -> None:
        super().__init__()
        self.model, self.use_backward = model, use_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x2 = x.detach().clone().requires_grad_(True)
            energy = self.model(x2).logsumexp(dim=1).sum()
            if self.use_backward:
                energy.backward()  # also fills the parameters' .grad
                grad = x2.grad
            else:
                (grad,) = torch.autograd.grad(energy, x2)
        return self.model((x + 0.01 * grad.sign()).clamp(0, 1))


# --------------------------------------------------------------------------- the trained model


def test_trained_model_passes_every_applicable_check(clean) -> None:
    _, checks = clean
    assert list(checks) == NAMES
    assert all(c.status in CHECK_STATUSES for c in checks.values())
    assert checks["too-few-classes"].status == "skipped"  # no targeted attack
    failing = {k: c.message for k, c in checks.items() if k != "too-few-classes" and c.status != "passed"}
    assert not failing


def test_model_rng_and_state_left_untouched(trained_model, subset) -> None:
    model = trained_model
    noise = GaussianNoise(std=0.1, eot_samples=2, seed=3)
    defended = defend(Purifier(model, use_backward=True), noise).eval()
    defended.model.train()  # a submodule in training mode must come back in training mode
    x, y = subset
    kwargs = _inputs(model, x, y, attacks={"fgsm": FGSM(), "pgd": PGD()})
    state = {k: v.clone() for k, v in defended.state_dict().items()}
    flags = [m.training for m in defended.modules()]
    global_rng = torch.get_rng_state()
    noise_rng = noise.generator_for(x.device).get_state()
    run_checks(defended, x, y, **kwargs)
    assert all(torch.equal(v, defended.state_dict()[k]) for k, v in state.items())
    assert [m.training for m in defended.modules()] == flags
    assert all(p.grad is None for p in defended.parameters())
    assert torch.equal(torch.get_rng_state(), global_rng)
    assert torch.equal(noise.generator_for(x.device).get_state(), noise_rng)
    unused, used = GaussianNoise(std=0.1, seed=5), GaussianNoise(std=0.1, seed=5)
    run_checks(defend(model, used), x, y, **kwargs)  # its first draws ever: the generator it made goes again
    assert torch.equal(used(x), unused(x))
    assert not torch._C._is_torch_function_mode_enabled()


def test_deterministic(model, subset, clean) -> None:
    kwargs, first = clean
    again = _run(model, *subset, **kwargs)
    assert [(c.status, c.message) for c in again.values()] == [(c.status, c.message) for c in first.values()]


def test_strict_turns_warnings_into_failures(model, subset, clean) -> None:
    kwargs, _ = clean
    probs = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    loose = _run(probs, *subset, **kwargs)
    strict = _run(probs, *subset, **{**kwargs, "strict": True})
    assert loose["probability-outputs"].status == "warning"
    assert strict["probability-outputs"].status == "failed"
    for name in NAMES:  # only the verdicts that warned change
        expected = "failed" if loose[name].status == "warning" else loose[name].status
        assert strict[name].status == expected


def test_a_check_that_raises_is_skipped_with_the_error(subset, clean) -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    kwargs, _ = clean
    checks = _run(Broken(), *subset, **kwargs)
    assert checks["randomized-model"].status == "skipped" and "boom" in checks["randomized-model"].message
    assert checks["monotonic-accuracy"].status == "passed"  # needs only the report
    assert not torch._C._is_torch_function_mode_enabled()


def test_validates_its_inputs(model, subset, clean) -> None:
    kwargs, _ = clean
    with pytest.raises(InputError, match="broken_at"):
        run_checks(model, *subset, **{**kwargs, "broken_at": {"pgd": kwargs["broken_at"]["pgd"]}})
    with pytest.raises(InputError, match="shape"):
        run_checks(model, *subset, **{**kwargs, "correct": kwargs["correct"][:10]})
    with pytest.raises(InputError, match="sorted"):
        run_checks(model, *subset, **{**kwargs, "budgets": [0.3, 0.1, 0.2]})


# --------------------------------------------------------------------------- one test per check


def test_randomized_model(model, subset, clean) -> None:
    kwargs, checks = clean
    assert checks["randomized-model"].status == "passed"
    global_rng = torch.get_rng_state()
    noisy = _run(Noisy(model), *subset, **kwargs)["randomized-model"]
    assert noisy.status == "warning" and "EOT" in noisy.message
    assert torch.equal(torch.get_rng_state(), global_rng)  # the model's draws left the global RNG as it was
    naive = defend(model, GaussianNoise(std=0.2, eot_samples=4), gradient_mode="naive")
    assert _run(naive, *subset, **kwargs)["randomized-model"].status == "warning"
    eot = _run(defend(model, GaussianNoise(std=0.2, eot_samples=4)), *subset, **kwargs)["randomized-model"]
    assert eot.status == "passed" and "EOT over 4 draws" in eot.message


def test_probability_outputs(model, subset, clean) -> None:
    kwargs, checks = clean
    assert checks["probability-outputs"].status == "passed"
    probs = _run(nn.Sequential(model, nn.Softmax(dim=1)), *subset, **kwargs)["probability-outputs"]
    assert probs.status == "warning" and "logits" in probs.message


def test_zero_gradients(model, subset, clean) -> None:
    kwargs, checks = clean
    assert checks["zero-gradients"].status == "passed"
    assert _run(Quantized(model), *subset, **kwargs)["zero-gradients"].status == "warning"
    naive = _run(defend(model, BitDepth(bits=2), gradient_mode="naive"), *subset, **kwargs)["zero-gradients"]
    assert naive.status == "warning" and "BPDA" in naive.message
    bpda = _run(defend(model, BitDepth(bits=2)), *subset, **kwargs)["zero-gradients"]
    assert bpda.status == "passed"


@pytest.mark.parametrize("use_backward", [False, True])
def test_dynamic_forward(model, subset, clean, use_backward) -> None:
    kwargs, checks = clean
    assert checks["dynamic-forward"].status == "passed"
    check = _run(Purifier(model, use_backward), *subset, **kwargs)["dynamic-forward"]
    assert check.status == "warning"
    assert ("backward" if use_backward else "torch.autograd.grad") in check.message
    assert not torch._C._is_torch_function_mode_enabled()
    assert all(p.grad is None for p in model.parameters())


def test_too_few_classes(model, subset, clean) -> None:
    kwargs, checks = clean
    assert checks["too-few-classes"].status == "skipped"
    targeted = {**kwargs, "attacks": {**kwargs["attacks"], "apgd-t": APGDT(steps=5)},
                "broken_at": {**kwargs["broken_at"], "apgd-t": kwargs["broken_at"]["pgd"]}}
    assert _run(model, *subset, **targeted)["too-few-classes"].status == "passed"
    few = _run(model, *subset, **{**targeted, "num_classes": 3})["too-few-classes"]
    assert few.status == "warning" and "apgd-t needs at least 4 classes" in few.message


def _curves(acc: list[float], eps: list[float]) -> dict[str, Any]:
    curve = dict(zip(eps, acc))
    return {"robust_accuracy": curve, "by_attack": {"fgsm": dict(curve), "pgd": dict(curve)}}


@pytest.mark.parametrize(
    ("acc", "eps", "status"),
    [
        ([0.99, 0.6, 0.1], [0.0, 0.1, 0.3], "passed"),  # falls
        ([0.99, 0.5, 0.6], [0.0, 0.1, 0.3], "warning"),  # rises
        ([0.9, 0.9, 0.9], [0.0, 0.1, 0.3], "warning"),  # flat above chance up to a large budget
        ([0.9, 0.9, 0.9], [0.0, 0.01, 0.02], "passed"),  # flat, but the budgets are small
        ([0.1, 0.1, 0.1], [0.0, 0.1, 0.3], "passed"),  # flat, at chance
    ],
)
def test_monotonic_accuracy(model, subset, clean, acc, eps, status) -> None:
    kwargs, checks = clean
    assert checks["monotonic-accuracy"].status == "passed"
    check = _run(model, *subset, **{**kwargs, **_curves(acc, eps)})["monotonic-accuracy"]
    assert check.status == status, check.message


def test_monotonic_accuracy_flags_a_worst_case_above_an_attack(model, subset, clean) -> None:
    kwargs, _ = clean
    curves = _curves([0.99, 0.6, 0.1], [0.0, 0.1, 0.3])
    curves["by_attack"]["pgd"][0.1] = 0.4
    check = _run(model, *subset, **{**kwargs, **curves})["monotonic-accuracy"]
    assert check.status == "warning" and "exceeds attack pgd" in check.message


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    drops=st.lists(st.floats(0.0, 0.3), min_size=2, max_size=5),
    rise=st.floats(0.02, 0.5),
    where=st.integers(0, 10),
)
def test_monotonic_accuracy_flags_exactly_the_rises(model, subset, drops, rise, where) -> None:
    """A falling curve that ends at chance passes; the same curve with one point raised warns."""
    eps = [0.0] + [0.1 * (i + 1) for i in range(len(drops))]
    acc = [1.0]
    for d in drops:
        acc.append(max(acc[-1] - d, 0.0))
    acc[-1] = min(acc[-1], 0.1)
    x, y = subset
    cheap = dict(attacks={}, broken_at={}, correct=torch.zeros(N, dtype=torch.bool), budgets=[], norm="linf",
                 bounds=(0.0, 1.0), num_classes=10, seed=0)  # no budget: only the model-only checks run too
    falling = _run(model, x, y, **cheap, **_curves(acc, eps))["monotonic-accuracy"]
    assert falling.status == "passed", falling.message
    i = 1 + where % (len(acc) - 1)
    raised = list(acc)
    raised[i] = acc[i - 1] + rise
    check = _run(model, x, y, **cheap, **_curves(raised, eps))["monotonic-accuracy"]
    assert check.status == "warning" and "rises" in check.message


def test_full_range_budget(model, subset, clean) -> None:
    kwargs, checks = clean
    assert checks["full-range-budget"].status == "passed"
    masked = _run(Quantized(model), *subset, **kwargs)["full-range-budget"]
    assert masked.status == "warning" and "obfuscated" in masked.message


def test_iterative_vs_single_step_on_given_broken_at(model, subset, clean) -> None:
    kwargs, _ = clean
    never = len(kwargs["budgets"])
    fgsm_at = torch.full((N,), never)
    pgd_at = torch.full((N,), never)
    first = int(kwargs["correct"].nonzero()[0])
    fgsm_at[first] = 1  # FGSM broke it at the second budget, PGD never did
    given = {**kwargs, "attacks": {"fgsm": FGSM(), "pgd": PGD()}, "broken_at": {"fgsm": fgsm_at, "pgd": pgd_at}}
    check = _run(model, *subset, **given)["iterative-vs-single-step"]
    assert check.status == "warning" and "1 of them" in check.message
    pgd_at[first] = 1  # broken at the same budget: consistent
    assert _run(model, *subset, **given)["iterative-vs-single-step"].status == "passed"


def test_iterative_vs_single_step_runs_fgsm_itself(model, subset) -> None:
    weak = _inputs(model, *subset, attacks={"pgd": PGD(steps=2, rel_stepsize=0.05, random_start=False)})
    check = _run(model, *subset, **weak)["iterative-vs-single-step"]
    assert check.status == "warning" and "FGSM run on the subset" in check.message
    strong = _inputs(model, *subset, attacks={"pgd": PGD(steps=20)})
    assert _run(model, *subset, **strong)["iterative-vs-single-step"].status == "passed"
    alone = _inputs(model, *subset, attacks={"fgsm": FGSM()})
    assert _run(model, *subset, **alone)["iterative-vs-single-step"].status == "skipped"


def test_black_box_vs_white_box(model, subset, clean) -> None:
    kwargs, checks = clean
    assert checks["black-box-vs-white-box"].status == "passed"
    masked_model = Quantized(model)
    masked = _inputs(masked_model, *subset, attacks={"pgd": PGD(steps=10)})
    check = _run(masked_model, *subset, **masked)["black-box-vs-white-box"]
    assert check.status == "warning" and "Square" in check.message


def test_black_box_vs_white_box_compares_an_evaluated_square(model, subset, clean) -> None:
    from robustness.attacks.square import Square

    kwargs, _ = clean
    never = len(kwargs["budgets"])
    square_at, pgd_at = kwargs["broken_at"]["pgd"].clone(), kwargs["broken_at"]["pgd"].clone()
    given = {**kwargs, "attacks": {"pgd": PGD(), "square": Square(queries=10)},
             "broken_at": {"pgd": pgd_at, "square": square_at}}
    assert _run(model, *subset, **given)["black-box-vs-white-box"].status == "passed"
    pgd_at[square_at < never] = never  # now Square broke samples that PGD never did
    check = _run(model, *subset, **given)["black-box-vs-white-box"]
    assert check.status == "warning" and "the evaluation's black-box square" in check.message


def test_black_box_skipped_for_non_images(subset) -> None:
    x, y = subset
    flat_x = x.flatten(1)
    mlp = nn.Sequential(nn.Linear(64, 10)).eval()
    kwargs = _inputs(mlp, flat_x, y, attacks={"pgd": PGD()}, epsilons=[0.0, 0.1])
    check = _run(mlp, flat_x, y, **kwargs)["black-box-vs-white-box"]
    assert check.status == "skipped" and "not images" in check.message


def test_convergence(model, subset, clean) -> None:
    kwargs, checks = clean
    assert checks["convergence"].status == "passed"
    short = _inputs(model, *subset, attacks={"pgd": PGD(steps=2, rel_stepsize=0.1, random_start=False)})
    check = _run(model, *subset, **short)["convergence"]
    assert check.status == "warning" and "a fresh run of pgd with 4 steps" in check.message
    alone = _inputs(model, *subset, attacks={"fgsm": FGSM()})
    assert _run(model, *subset, **alone)["convergence"].status == "skipped"


@pytest.mark.gpu
def test_follows_the_device(model, subset, clean) -> None:
    kwargs, cpu_checks = clean
    device = torch.device("cuda")
    moved = {**kwargs, "broken_at": {k: v.to(device) for k, v in kwargs["broken_at"].items()},
             "correct": kwargs["correct"].to(device)}
    gpu_model = TinyCNN().to(device).eval()
    gpu_model.load_state_dict(model.state_dict())
    checks = _run(gpu_model, subset[0].to(device), subset[1].to(device), **moved)
    assert [c.status for c in checks.values()] == [c.status for c in cpu_checks.values()]
    assert next(gpu_model.parameters()).device.type == "cuda"


def test_convergence_reruns_one_longer_run_on_at_most_a_few_unbroken_samples(model, subset) -> None:
    from robustness.checks.attack_checks import CONVERGENCE_MAX_SAMPLES

    calls: list[tuple[int, int, int]] = []  # (samples, steps, restarts) of every call

    @dataclass(frozen=True, kw_only=True)
    class Recording(FixedBudgetAttack):
        name: ClassVar[str] = "recording"
        kind: ClassVar[AttackKind] = "iterative"
        norm: str = "linf"
        steps: int = 3
        restarts: int = 4

        def _run(self, model, x, y, *, eps, bounds, target, generator):
            calls.append((x.shape[0], self.steps, self.restarts))
            return x  # breaks nothing: every correct sample stays unbroken

    kwargs = _inputs(model, *subset, attacks={"recording": Recording()})
    calls.clear()
    check = _run(model, *subset, **kwargs)["convergence"]
    rerun = [c for c in calls if c[1] == 6]
    assert rerun == [(CONVERGENCE_MAX_SAMPLES, 6, 1)]  # twice the steps, one restart, a capped sample
    assert check.status == "passed" and f"on {CONVERGENCE_MAX_SAMPLES} of them breaks 0" in check.message


# --------------------------------------------------------------------------- attacks' declared kinds


@dataclass(frozen=True, kw_only=True)
class Nudge(FixedBudgetAttack):
    """A new attack with no ``steps`` setting: one signed-gradient step of ``eps`` (FGSM), declared
    of the kind the test gives it, so that only its declaration tells the checks what it is."""

    name: ClassVar[str] = "nudge"
    kind: ClassVar[AttackKind] = "iterative"
    norm: str = "linf"

    def _run(self, model, x, y, *, eps, bounds, target, generator):
        return FGSM(norm=self.norm)(model, x, y, eps=eps, bounds=bounds, generator=generator)


@dataclass(frozen=True, kw_only=True)
class BlackNudge(Nudge):
    name: ClassVar[str] = "black-nudge"
    kind: ClassVar[AttackKind] = "black-box"


@dataclass(frozen=True, kw_only=True)
class Undeclared(FixedBudgetAttack):
    name: ClassVar[str] = "undeclared"
    norm: str = "linf"
    steps: int = 10

    def _run(self, model, x, y, *, eps, bounds, target, generator):
        return x


def test_checks_read_the_declared_kind_of_a_new_attack(model, subset) -> None:
    """A registered attack with no ``steps`` takes part in the checks through its declared kind."""
    registry = Registry("robustness.tests-no-entry-points", "attack")
    registry.register("nudge", Nudge)
    registry.register("black-nudge", BlackNudge)
    kwargs = _inputs(model, *subset, attacks={"fgsm": FGSM(), "nudge": registry.create("nudge")})
    checks = _run(model, *subset, **kwargs)
    single = checks["iterative-vs-single-step"]
    assert single.status == "passed" and "the iterative attacks (nudge)" in single.message
    assert "the white-box attacks (fgsm, nudge)" in checks["black-box-vs-white-box"].message
    convergence = checks["convergence"]
    assert convergence.status == "skipped" and "nudge (no integer `steps` setting to double)" in convergence.message

    kwargs = _inputs(model, *subset, attacks={"pgd": PGD(steps=5), "black-nudge": registry.create("black-nudge")})
    black = _run(model, *subset, **kwargs)["black-box-vs-white-box"]
    assert "the evaluation's black-box black-nudge" in black.message and "white-box attacks (pgd)" in black.message


def test_an_attack_without_a_kind_is_named_in_the_checks_it_cannot_join(model, subset, clean) -> None:
    kwargs, _ = clean
    never = torch.full((N,), len(kwargs["budgets"]))
    given = {**kwargs, "attacks": {**kwargs["attacks"], "undeclared": Undeclared()},
             "broken_at": {**kwargs["broken_at"], "undeclared": never}}
    checks = _run(model, *subset, **given)
    for name in ("iterative-vs-single-step", "black-box-vs-white-box", "convergence"):
        assert checks[name].status == "skipped", name
        assert "'undeclared' (Undeclared) declares no kind" in checks[name].message
        assert "kind: ClassVar[AttackKind]" in checks[name].message
    assert checks["monotonic-accuracy"].status == "passed"  # the checks that need no kind still run
