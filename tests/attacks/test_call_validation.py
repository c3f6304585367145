"""The direct call ``attack(model, x, y, eps=..., bounds=..., target=..., generator=...)`` of the base
classes (attacks/base.py) and of the ART adapter: inputs outside the bounds or in half precision
are refused, labels of any integer dtype and NumPy or tensor budgets are accepted, a model in
training mode is attacked in eval mode and comes back bit-identical, and a forward that blocks
gradients gives an InputError that says what to do."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustness.attacks import APGD, DDN, FAB, FABT, FGSM, FMN, PGD, CarliniWagnerL2, Square
from robustness.attacks.base import MinimizationAttack
from robustness.errors import InputError
from robustness.norms import norm_of
from tests.counting import Counting

N = 16


def _attacks() -> list:
    """One cheap instance of every built-in attack (CW and DDN in L2, the others in Linf)."""
    return [FGSM(), PGD(steps=3), APGD(steps=5), Square(queries=30), CarliniWagnerL2(binary_search_steps=1, steps=5),
            FAB(steps=3), FABT(steps=3, target_classes=2), FMN(steps=3), DDN(steps=3)]


def _eps(attack) -> float:
    return 1.0 if attack.norm == "l2" else 0.1


def _ids(attacks: list) -> list[str]:
    return [a.label for a in attacks]


ATTACKS = _attacks()


class BNDropoutNet(nn.Module):
    """A tiny conv net with BatchNorm and Dropout, for 8x8 single-channel inputs."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 8 * 8, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            self.bn.running_mean.copy_(torch.rand(4, generator=g))
            self.bn.running_var.copy_(torch.rand(4, generator=g) + 0.5)
        self.seen_training: list[bool] = []  # the mode of every forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


class NoGrad(nn.Module):
    """A model whose forward runs under torch.no_grad(): gradients never reach the input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture()
def batch(test_batch) -> tuple[torch.Tensor, torch.Tensor]:
    return test_batch[0][:N], test_batch[1][:N]


# ---------------------------------------------------------------- 1. inputs outside the bounds


@pytest.mark.parametrize("attack", ATTACKS, ids=_ids(ATTACKS))
def test_inputs_outside_the_bounds_are_refused(attack, trained_model, batch) -> None:
    x, y = batch
    x255 = x * 255  # 0-255 pixels, bounds=(0, 255) forgotten
    with pytest.raises(InputError) as info:
        attack(trained_model, x255, y, eps=_eps(attack))
    message = str(info.value)
    assert f"{x255.max().item():.6g}" in message and "[0.0, 1.0]" in message  # what was found, the bounds
    assert "bounds=" in message and "rescale" in message and "inside the model" in message  # what to do


def test_the_right_bounds_make_the_same_call_work(trained_model, batch) -> None:
    x, y = batch
    x255 = (x * 255).round()
    adv = PGD(steps=3)(lambda z: trained_model(z / 255), x255, y, eps=2.0, bounds=(0, 255))
    assert norm_of(adv - x255, "linf").max() <= 2.0 + 1e-4
    assert adv.min() >= 0 and adv.max() <= 255


def test_rounding_at_the_bounds_is_not_an_error(trained_model, batch) -> None:
    x, y = batch
    x = x.clone()
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1 + 1e-7, -1e-7  # float noise from a preprocessing step
    adv = FGSM()(trained_model, x, y, eps=0.1)
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("attack", [PGD(steps=2), CarliniWagnerL2(binary_search_steps=1, steps=2)], ids=["pgd", "cw"])
def test_nan_and_inf_inputs_are_refused(attack, bad, trained_model, batch) -> None:
    x, y = batch
    x = x.clone()
    x[3, 0, 4, 4] = bad
    with pytest.raises(InputError, match="NaN or inf"):
        attack(trained_model, x, y, eps=_eps(attack))


# ---------------------------------------------------------------- 2. half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("attack", ATTACKS, ids=_ids(ATTACKS))
def test_half_precision_inputs_are_refused(attack, dtype, trained_model, batch) -> None:
    x, y = batch
    with pytest.raises(InputError) as info:
        attack(trained_model.to(dtype), x.to(dtype), y, eps=_eps(attack))
    message = str(info.value)
    assert str(dtype) in message and "float32 or float64" in message
    assert "x.float()" in message and 'amp="bf16"' in message


@pytest.mark.parametrize("attack", ATTACKS, ids=_ids(ATTACKS))
def test_float64_still_works(attack, trained_model, batch) -> None:
    x, y = batch
    x64 = x.double()
    eps = _eps(attack)
    adv = attack(trained_model.double(), x64, y, eps=eps)
    assert adv.dtype == torch.float64
    assert torch.all(norm_of(adv - x64, attack.norm) <= eps * (1 + 1e-9))


# ---------------------------------------------------------------- 3. labels


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
@pytest.mark.parametrize("attack", ATTACKS, ids=_ids(ATTACKS))
def test_integer_labels_of_any_dtype_give_the_same_result(attack, dtype, trained_model, batch) -> None:
    x, y = batch
    eps = _eps(attack)
    expected = attack(trained_model, x, y, eps=eps, generator=_gen(1))
    got = attack(trained_model, x, y.to(dtype), eps=eps, generator=_gen(1))
    assert torch.equal(got, expected)
    target = (y + 1) % 10
    expected = attack(trained_model, x, y, eps=eps, target=target, generator=_gen(2))
    got = attack(trained_model, x, y.to(dtype), eps=eps, target=target.to(dtype), generator=_gen(2))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_float_and_bool_labels_are_refused(dtype, trained_model, batch) -> None:
    x, y = batch
    with pytest.raises(InputError, match=rf"y must hold integer class indices, got dtype {dtype}"):
        PGD(steps=2)(trained_model, x, y.to(dtype), eps=0.1)
    with pytest.raises(InputError, match=rf"target must hold integer class indices, got dtype {dtype}"):
        PGD(steps=2)(trained_model, x, y, eps=0.1, target=((y + 1) % 10).to(dtype))


@pytest.mark.parametrize("attack", ATTACKS, ids=_ids(ATTACKS))
def test_negative_labels_are_refused(attack, trained_model, batch) -> None:
    x, y = batch
    bad = y.clone()
    bad[5] = -3
    with pytest.raises(InputError, match=r"y holds negative labels \(the smallest is -3\)"):
        attack(trained_model, x, bad, eps=_eps(attack))
    with pytest.raises(InputError, match=r"target holds negative labels"):
        attack(trained_model, x, y, eps=_eps(attack), target=bad.int())


@pytest.mark.parametrize("attack", ATTACKS, ids=_ids(ATTACKS))
def test_labels_beyond_the_logits_are_refused(attack, trained_model, batch) -> None:
    x, y = batch
    big = y.clone()
    big[2] = 12  # the model has 10 classes
    with pytest.raises(InputError, match=r"y holds the label 12 but the model returns 10 logits.*\[0, 9\]"):
        attack(trained_model, x, big, eps=_eps(attack))
    with pytest.raises(InputError, match=r"target holds the label 12"):
        attack(trained_model, x, y, eps=_eps(attack), target=big)


# ---------------------------------------------------------------- 4. eps as NumPy scalars and tensors


@pytest.mark.parametrize("eps", [np.float32(0.1), np.float64(0.1), np.int64(0), torch.tensor(0.1),
                                 torch.tensor(0.1, dtype=torch.float64), torch.tensor(0)], ids=repr)
def test_numpy_and_tensor_budgets_give_the_same_result_as_float(eps, trained_model, batch) -> None:
    x, y = batch
    attack = PGD(steps=3)
    expected = attack(trained_model, x, y, eps=float(eps), generator=_gen())
    assert torch.equal(attack(trained_model, x, y, eps=eps, generator=_gen()), expected)


def test_numpy_integer_budget_of_a_minimization_attack(trained_model, batch) -> None:
    x, y = batch
    cw = CarliniWagnerL2(binary_search_steps=1, steps=5)
    assert torch.equal(cw(trained_model, x, y, eps=np.int64(1)), cw(trained_model, x, y, eps=1.0))


@settings(max_examples=10, deadline=None)
@given(eps=st.floats(0.0, 0.5, allow_subnormal=False))
def test_any_real_budget_kind_is_the_same_budget(eps) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Linear(6, 3)
    x, y = torch.rand(4, 6, generator=_gen()), torch.tensor([0, 1, 2, 0])
    expected = FGSM()(model, x, y, eps=float(np.float32(eps)))
    assert torch.equal(FGSM()(model, x, y, eps=np.float32(eps)), expected)
    assert torch.equal(FGSM()(model, x, y, eps=torch.tensor(eps, dtype=torch.float32)), expected)


@pytest.mark.parametrize("eps", [True, np.bool_(True), math.nan, np.float32("nan"), math.inf, np.float64("inf"), -0.1,
                                 np.int64(-1), torch.tensor(-0.1), torch.tensor([0.1]), torch.tensor(True), "0.1",
                                 None], ids=repr)
def test_bad_budgets_are_refused(eps, trained_model, batch) -> None:
    x, y = batch
    with pytest.raises(InputError, match="eps must be"):
        PGD(steps=2)(trained_model, x, y, eps=eps)


# ---------------------------------------------------------------- 5. a model in training mode


@pytest.mark.parametrize("attack", ATTACKS, ids=_ids(ATTACKS))
def test_training_mode_model_comes_back_bit_identical(attack) -> None:
    model = BNDropoutNet().train()
    model.conv.eval()  # a mixed mode must survive
    x, y = torch.rand(8, 1, 8, 8, generator=_gen()), torch.arange(8) % 10
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()

    adv = attack(model, x, y, eps=_eps(attack), generator=_gen(4))

    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)  # BatchNorm statistics included
    assert modes == [m.training for m in model.modules()]
    assert torch.equal(rng, torch.get_rng_state())  # dropout drew nothing from the global RNG
    assert model.seen_training and not any(model.seen_training)  # every forward ran in eval mode
    # the same attack as on the model in eval mode
    reference = BNDropoutNet().eval()
    assert torch.equal(adv, attack(reference, x, y, eps=_eps(attack), generator=_gen(4)))


def test_modes_are_restored_after_an_error() -> None:
    model = BNDropoutNet().train()
    with pytest.raises(InputError):
        PGD(steps=2)(NoGrad(model), torch.rand(4, 1, 8, 8), torch.arange(4), eps=0.1)
    assert all(m.training for m in model.modules())


# ---------------------------------------------------------------- 6. a forward that blocks gradients


GRADIENT_ATTACKS = [a for a in ATTACKS if a.label != "square"]


@pytest.mark.parametrize("attack", GRADIENT_ATTACKS, ids=_ids(GRADIENT_ATTACKS))
def test_a_no_grad_forward_gives_an_input_error(attack, trained_model, batch) -> None:
    x, y = batch
    with pytest.raises(InputError) as info:
        attack(NoGrad(trained_model), x, y, eps=_eps(attack))
    message = str(info.value)
    assert "does not let gradients reach the input" in message
    assert '"square"' in message and "no_grad" in message


@pytest.mark.parametrize("attack", GRADIENT_ATTACKS, ids=_ids(GRADIENT_ATTACKS))
def test_a_call_under_inference_mode_gives_an_input_error(attack, trained_model, batch) -> None:
    x, y = batch
    with torch.inference_mode(), pytest.raises(InputError) as info:
        attack(trained_model, x, y, eps=_eps(attack))
    message = str(info.value)
    assert "does not let gradients reach the input" in message
    assert "inference_mode" in message and '"square"' in message


def test_square_runs_on_a_no_grad_forward(trained_model, batch) -> None:
    x, y = batch
    square = Square(queries=30)
    assert torch.equal(square(NoGrad(trained_model), x, y, eps=0.1), square(trained_model, x, y, eps=0.1))


def test_other_runtime_errors_are_not_converted(batch) -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    x, y = batch
    with pytest.raises(RuntimeError, match="mat1 and mat2") as info:
        PGD(steps=2)(Broken(), x, y, eps=0.1)
    assert not isinstance(info.value, InputError)


# ---------------------------------------------------------------- 7. eps validated before running


@pytest.mark.parametrize("attack", ATTACKS, ids=_ids(ATTACKS))
def test_eps_is_validated_before_the_model_runs(attack, trained_model, batch) -> None:
    x, y = batch
    model = Counting(trained_model)
    with pytest.raises(InputError, match="eps must be a finite number >= 0"):
        attack(model, x, y, eps=-1)
    assert model.calls == 0
    if isinstance(attack, MinimizationAttack):
        attack(model, x, y)  # no eps is fine: the smallest perturbations found
        assert model.calls > 0


# ---------------------------------------------------------------- 8. ART's probe


class BN1dNet(nn.Module):
    """An MLP with BatchNorm1d (fails on one sample in training mode) and Dropout."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # fixed weights; the fixture restores the global RNG
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture()
def bn1d_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        return BN1dNet().train()


def _art_fgm():
    pytest.importorskip("art")
    from robustness.attacks.art_adapter import ARTAttack

    return ARTAttack.of("FastGradientMethod")


def test_art_probe_leaves_a_training_mode_model_untouched(bn1d_model) -> None:
    attack = _art_fgm()
    x, y = torch.rand(6, 1, 8, 8, generator=_gen()), torch.arange(6)
    state = {k: v.clone() for k, v in bn1d_model.state_dict().items()}
    rng = torch.get_rng_state()
    # ``_run`` directly: the adapter itself, without the base class's eval mode around it
    attack._run(bn1d_model, x, y, eps=0.1, bounds=(0.0, 1.0), target=None, generator=_gen())
    after = bn1d_model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)  # the probe updated no BatchNorm statistics
    assert torch.equal(rng, torch.get_rng_state())
    assert all(m.training for m in bn1d_model.modules())


def test_art_attack_on_a_training_mode_batchnorm1d_model(bn1d_model) -> None:
    attack = _art_fgm()
    x, y = torch.rand(6, 1, 8, 8, generator=_gen()), torch.arange(6).int()
    state = {k: v.clone() for k, v in bn1d_model.state_dict().items()}
    adv = attack(bn1d_model, x, y, eps=0.1)
    assert norm_of(adv - x, "linf").max() <= 0.1 + 1e-6
    after = bn1d_model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert all(m.training for m in bn1d_model.modules())
    with pytest.raises(InputError, match="outside the bounds"):
        attack(bn1d_model, x * 255, y, eps=0.1)
