"""bf16 autocast, channels_last and torch.compile (:mod:`robustness.acceleration`): close to the
full-precision eager result, inside the budget and bounds, and the user's model back unchanged.

Tolerances on the 128-image test batch, per budget: channels_last changes only the memory layout
(float sums in another order), so robust accuracy within 2 samples of the eager run; bf16 rounds
every activation to 8 significant bits, which can flip a borderline prediction or a gradient
sign, so within 5 samples (4%). torch.compile runs once in this file (a few seconds on a cold
cache), on a fixed-step PGD so that it compiles only two graphs.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import robustness
from robustness.attacks import FGSM, PGD
from robustness.acceleration import AcceleratedModule, accelerated, check_amp
from robustness.errors import InputError, RobustnessWarning

CPU = torch.device("cpu")
BUDGETS = [0.05, 0.1, 0.2]
KW = dict(attacks=["fgsm", PGD(steps=5)], epsilons=[0, *BUDGETS], progress=False, checks=False, seed=3)
TOLERANCE = {"channels_last": 2, "amp": 5}  # samples of the 128-image batch, per budget


def _snapshot(model: nn.Module) -> dict[str, object]:
    """Everything about the model that an evaluation must leave as it found it."""
    tensors = {f"p:{k}": v for k, v in model.named_parameters()} | {f"b:{k}": v for k, v in model.named_buffers()}
    return {
        "values": {k: v.detach().clone() for k, v in tensors.items()},
        "strides": {k: (v.stride(), v.storage_offset(), v.dtype, v.device, v.requires_grad) for k, v in tensors.items()},
        "identity": {k: id(v) for k, v in tensors.items()},
        "modes": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(m._backward_pre_hooks)) for m in model.modules()],
    }


def _assert_unchanged(model: nn.Module, before: dict[str, object]) -> None:
    after = _snapshot(model)
    assert after["strides"] == before["strides"]
    assert after["identity"] == before["identity"]  # the same Parameter objects, not replacements
    assert after["modes"] == before["modes"] and after["hooks"] == before["hooks"]
    for k, v in before["values"].items():  # type: ignore[union-attr]
        assert torch.equal(after["values"][k], v), k  # type: ignore[index]


def _mixed_layouts(model: nn.Module) -> nn.Module:
    """The first conv weight already channels_last, the rest NCHW: both must come back as they were."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    return model


@pytest.mark.parametrize("option", [{"channels_last": True}, {"amp": "bf16"}, {"amp": "bf16", "channels_last": True}])
def test_options_agree_with_eager_and_leave_the_model_unchanged(option, trained_model, test_batch) -> None:
    x, y = test_batch
    model = _mixed_layouts(trained_model).train()  # the runner evaluates in eval mode and restores train
    before = _snapshot(model)
    eager = robustness.evaluate(model, (x, y), **KW)
    fast = robustness.evaluate(model, (x, y), **KW, **option)
    _assert_unchanged(model, before)
    samples = TOLERANCE["amp" if "amp" in option else "channels_last"]
    assert abs(fast.clean_accuracy - eager.clean_accuracy) <= 1 / len(y) + 1e-9
    for eps in BUDGETS:
        assert abs(fast.robust_accuracy[eps] - eager.robust_accuracy[eps]) <= samples / len(y) + 1e-9, eps
        assert fast.max_perturbation[eps] <= eps + 1e-6
    assert fast.robust_accuracy[0.2] < fast.clean_accuracy  # the attacks still bite


@pytest.mark.parametrize("amp", [None, "bf16"])
def test_attacks_see_float32_and_stay_in_budget_and_bounds(amp, trained_model, test_batch) -> None:
    x, y = test_batch
    with accelerated(trained_model, amp=amp, channels_last=True, compile=False, device=CPU) as fast:
        conv = next(m for m in trained_model.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # converted for the duration
        xr = x.clone().requires_grad_(True)
        logits = fast(xr)
        (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), xr)
        assert logits.dtype == torch.float32 and grad.dtype == torch.float32 and xr.dtype == torch.float32
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        for attack in (FGSM(), PGD(steps=5)):
            adv = attack(fast, x, y, eps=0.1, generator=torch.Generator().manual_seed(0))
            assert adv.dtype == torch.float32
            assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert fast.options == {"amp": amp, "channels_last": True, "compile": False}
    with torch.no_grad():
        if amp is None:  # only the layout changed: the same function up to float rounding
            assert torch.allclose(logits, trained_model(x), atol=1e-4)
        else:
            assert (logits.argmax(1) == trained_model(x).argmax(1)).float().mean() >= 0.97


def test_channels_last_converts_4d_inputs_only() -> None:
    class Layout(nn.Module):
        """Logits that say whether the input arrived in channels_last."""

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[int, ...]] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(x.stride())
            return x.flatten(1)[:, :3]

    model = Layout()
    image, flat, volume = torch.rand(2, 3, 4, 5), torch.rand(2, 7), torch.rand(2, 3, 2, 4, 5)
    with accelerated(model, amp=None, channels_last=True, compile=False, device=CPU) as fast:
        for x in (image, flat, volume):
            assert torch.equal(fast(x), x.flatten(1)[:, :3])
    assert model.seen == [image.contiguous(memory_format=torch.channels_last).stride(), flat.stride(), volume.stride()]
    assert model.seen[0] != image.stride()


def test_channels_last_restores_the_model_after_an_error(trained_model) -> None:
    before = _snapshot(trained_model)
    with pytest.raises(RuntimeError, match="boom"):
        with accelerated(trained_model, amp=None, channels_last=True, compile=False, device=CPU):
            raise RuntimeError("boom")
    _assert_unchanged(trained_model, before)


class _TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.twin = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)).flatten(1)


@settings(max_examples=20, deadline=None)
@given(perm=st.permutations(range(4)), shared=st.booleans())
def test_any_memory_layout_comes_back_bit_identical(perm, shared) -> None:
    """Parameters and buffers in any dense layout (and a tensor shared by two modules) keep their strides."""
    gen = torch.Generator().manual_seed(0)
    model = _TwoConvs()
    inverse = [perm.index(i) for i in range(4)]
    w = model.a.weight.data
    model.a.weight.data = torch.randn(w.shape, generator=gen).permute(perm).contiguous().permute(inverse)
    model.register_buffer("table", torch.randn(2, 3, 4, 5, generator=gen).permute(perm))  # not even contiguous
    if shared:  # one Parameter and one buffer reached through two modules
        model.twin.weight = model.a.weight
        model.twin.register_buffer("table", model.table)
    before = _snapshot(model)
    x = torch.rand(2, 3, 6, 6, generator=gen)
    with torch.no_grad():
        expected = model(x)
        with accelerated(model, amp=None, channels_last=True, compile=False, device=CPU) as fast:
            got = fast(x)
            assert all(t.is_contiguous(memory_format=torch.channels_last) for t in model.parameters() if t.dim() == 4)
    assert torch.allclose(got, expected, atol=1e-5)
    _assert_unchanged(model, before)


def test_bad_options_are_input_errors(trained_model, test_batch) -> None:
    x, y = test_batch
    with pytest.raises(InputError, match="'bf16'") as err:
        robustness.evaluate(trained_model, (x[:8], y[:8]), amp="fp16", **{**KW, "attacks": ["fgsm"]})
    assert "float16" in str(err.value)
    assert check_amp("BF16") == "bf16" and check_amp(None) is None
    for kwargs in ({"channels_last": "yes"}, {"compile": 1}):
        with pytest.raises(InputError, match="True or False"):
            with accelerated(trained_model, **{"amp": None, "channels_last": False, "compile": False, **kwargs},
                             device=CPU):
                pass


def test_compiled_evaluation_matches_eager(trained_model, test_batch, monkeypatch) -> None:
    """The one real torch.compile of this file: fixed-size batches, so two graphs (with and without autograd)."""
    x, y = test_batch[0][:32], test_batch[1][:32]
    calls: list[dict[str, object]] = []
    real = torch.compile

    def spy(module, **kwargs):
        calls.append(kwargs)
        return real(module, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    kw = dict(attacks=["fgsm", PGD(steps=3, early_stop=False)], epsilons=[0, 0.1], progress=False, checks=False)
    before = _snapshot(trained_model)
    eager = robustness.evaluate(trained_model, (x, y), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)  # no fallback to eager
        compiled = robustness.evaluate(trained_model, (x, y), compile=True, **kw)
    assert calls == [{"dynamic": True}]
    assert compiled.clean_accuracy == eager.clean_accuracy
    assert abs(compiled.robust_accuracy[0.1] - eager.robust_accuracy[0.1]) <= 1 / len(y) + 1e-9
    assert compiled.max_perturbation[0.1] <= 0.1 + 1e-6
    _assert_unchanged(trained_model, before)


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        raise RuntimeError("InductorError: backward failed to compile\nsecond line")


class _Broken(nn.Module):
    """What a failed compilation looks like: at the first call, or (lazy, with dynamic shapes) in
    the first backward."""

    def __init__(self, module: nn.Module, where: str) -> None:
        super().__init__()
        self.module, self.where = module, where
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.where == "backward":
            return _FailingBackward.apply(self.module(x))
        raise RuntimeError("InductorError: no working C compiler found\nsecond line")


@pytest.mark.parametrize("where", ["torch.compile", "first call", "backward"])
def test_compile_failure_falls_back_to_eager_with_a_warning(where, trained_model, test_batch, monkeypatch) -> None:
    x, y = test_batch
    made: list[_Broken] = []

    def failing(module, **kwargs):
        if where == "torch.compile":
            raise RuntimeError("Windows not yet supported for torch.compile")
        made.append(_Broken(module, where))
        return made[-1]

    monkeypatch.setattr(torch, "compile", failing)
    eager = robustness.evaluate(trained_model, (x, y), **KW)
    with pytest.warns(RobustnessWarning, match="went on uncompiled") as record:
        fallback = robustness.evaluate(trained_model, (x, y), compile=True, amp=None, **KW)
    messages = [str(w.message) for w in record if "uncompiled" in str(w.message)]
    assert len(messages) == 1  # once, not per call
    assert fallback.per_sample == eager.per_sample and fallback.robust_accuracy == eager.robust_accuracy
    if where == "first call":
        assert made[0].calls == 1  # given up on after the first failure
        assert "C compiler" in messages[0] and "second line" not in messages[0]
    elif where == "backward":  # the clean pass (no autograd) ran compiled; the first gradient call fell back
        assert made[0].calls == 2 and "backward failed" in messages[0]
    else:
        assert "Windows" in messages[0]


def test_the_models_own_errors_and_out_of_memory_are_not_compile_failures(trained_model, monkeypatch) -> None:
    class Raises(nn.Module):
        def __init__(self, error: Exception) -> None:
            super().__init__()
            self.error = error

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise self.error

    monkeypatch.setattr(torch, "compile", lambda module, **kw: Raises(RuntimeError("compiled failure")))
    bad_model = Raises(ValueError("the model's own shape error"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)
        with accelerated(bad_model, amp=None, channels_last=False, compile=True, device=CPU) as fast:
            with pytest.raises(ValueError, match="own shape error"):
                fast(torch.zeros(2, 1, 8, 8))
            assert fast.compiled is not None and not fast.notes  # not blamed on the compiler

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
    monkeypatch.setattr(torch, "compile", lambda module, **kw: Raises(oom))
    before = _snapshot(trained_model)
    with accelerated(trained_model, amp=None, channels_last=False, compile=True, device=CPU) as fast:
        assert isinstance(fast, AcceleratedModule)
        # a compiled backward would compute parameter gradients too: off for the duration
        assert not any(p.requires_grad for p in trained_model.parameters())
        with pytest.raises(torch.cuda.OutOfMemoryError):  # the runner halves the batch on this
            fast(torch.zeros(2, 1, 8, 8))
        assert fast.compiled is not None
    _assert_unchanged(trained_model, before)  # requires_grad restored
    assert all(p.requires_grad for p in trained_model.parameters())


@pytest.mark.gpu
def test_bf16_channels_last_on_cuda_returns_the_model_to_the_cpu(trained_model, test_batch) -> None:
    x, y = test_batch
    before = _snapshot(trained_model)
    eager = robustness.evaluate(trained_model, (x, y), device="cuda", **KW)
    fast = robustness.evaluate(trained_model, (x, y), device="cuda", amp="bf16", channels_last=True, **KW)
    _assert_unchanged(trained_model, before)
    for eps in BUDGETS:
        assert abs(fast.robust_accuracy[eps] - eager.robust_accuracy[eps]) <= TOLERANCE["amp"] / len(y) + 1e-9


def test_the_report_records_the_options_and_a_state_refuses_to_mix_precisions(trained_model, test_batch,
                                                                               tmp_path) -> None:
    from robustness.errors import InputError

    x, y = test_batch
    kw = dict(attacks=["fgsm"], epsilons=[0.1], progress=False, checks=False, batch_size=64)
    report = robustness.evaluate(trained_model, (x, y), amp="bf16", state=tmp_path / "s", **kw)
    assert report.speedups == {"amp": "bf16", "channels_last": False, "compile": False}
    assert any("bf16" in w for w in report.warnings)
    with pytest.raises(InputError, match="amp"):
        robustness.evaluate(trained_model, (x, y), state=tmp_path / "s", **kw)  # float32 now: refused
