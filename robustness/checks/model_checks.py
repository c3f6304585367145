"""Sanity checks of the model itself: randomness, probability outputs, masked gradients,
autograd inside the forward pass, and too few classes for targeted losses (see :mod:`robustness.checks`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from robustness.defenses.preprocessing import describe_defenses
from robustness.checks.context import CheckContext, count
from robustness.report import Check

__all__ = ["RANDOM_DRAWS", "ZERO_GRADIENT_FRACTION", "AutogradCalls", "dynamic_forward", "probability_outputs",
           "randomized_model", "too_few_classes", "zero_gradients"]

ZERO_GRADIENT_FRACTION = 0.1  #: zero-gradients warns above this fraction of correct points
RANDOM_DRAWS = 3  #: a fresh adversarial input must fool a randomized model in this many draws

def randomized_model(ctx: CheckContext) -> Check:
    with torch.no_grad():
        a, b = ctx.model(ctx.x), ctx.model(ctx.x)
    diff = float((a - b).abs().max())
    if diff <= 1e-4 * (1.0 + float(a.abs().max())):
        return Check("randomized-model", "passed", f"two forward passes on {ctx.n} inputs agree (max logit "
                     f"difference {diff:.2g})")
    ctx.draws = RANDOM_DRAWS
    flips = count(a.argmax(1) != b.argmax(1))
    measured = (f"two forward passes on the same {ctx.n} inputs differ (max logit difference {diff:.3g}; "
                f"{flips} predictions changed)")
    eot = [p for d in describe_defenses(ctx.model) if d["gradient_mode"] == "adaptive" for p in d["preprocessors"]
           if p["randomized"] and p["eot_samples"] > 1]
    if eot:
        return Check("randomized-model", "passed", f"{measured}; the randomized defenses "
                     f"({', '.join(p['name'] for p in eot)}) are attacked with EOT over "
                     f"{max(p['eot_samples'] for p in eot)} draws. Predictions are single draws: expect noise")
    # the attacks' own EOT setting: every gradient attack averages over several draws (the rand preset)
    draws = {k: getattr(a, "eot_samples", 1) for k, a in ctx.attacks.items() if getattr(a, "kind", None) != "black-box"}
    if draws and min(draws.values()) > 1:
        return Check("randomized-model", "passed", f"{measured}; every gradient attack ({', '.join(draws)}) "
                     f"averages its gradients over at least {min(draws.values())} draws (eot_samples). "
                     f"Predictions are single draws: expect noise")
    return ctx.verdict("randomized-model", False, (
        f"{measured}: the model is randomized, so each attack step follows one random draw and each "
        f"prediction is one draw, which overestimates robustness. Fix: evaluate with the rand preset "
        f"(attacks=\"rand\", --attacks rand: APGD-CE and APGD-DLR with Expectation over Transformation, EOT, "
        f"over 20 draws, as AutoAttack's rand version), or give the gradient attacks eot_samples=k "
        f"(e.g. 'apgd-ce(eot_samples=20)'), or declare the randomness as a preprocessing defense attacked "
        f"with EOT (robustness.defenses.defend(model, GaussianNoise(std=..., eot_samples=16)) with "
        f"gradient_mode='adaptive'), or make the model deterministic"))


def probability_outputs(ctx: CheckContext) -> Check:
    with torch.no_grad():
        out = ctx.model(ctx.x)
    sums = out.sum(dim=1)
    probs = bool((out >= -1e-6).all()) and bool(((sums - 1).abs() <= 1e-3).all())
    if not probs:
        return Check("probability-outputs", "passed", f"outputs of {ctx.n} inputs are not probability rows "
                     f"(row sums {float(sums.min()):.3g} to {float(sums.max()):.3g}): logits, as attacks expect")
    return ctx.verdict("probability-outputs", False, (
        f"all {ctx.n} output rows are non-negative and sum to 1: the model returns probabilities. Attacks "
        f"take its outputs for logits: their gradients pass through the model's own softmax, which saturates "
        f"and makes them vanish on confident points, so gradient attacks look weak. Fix: remove the final "
        f"softmax and return logits"))


def zero_gradients(ctx: CheckContext) -> Check:
    idx = ctx.correct.nonzero().squeeze(1)
    if idx.numel() == 0:
        return Check("zero-gradients", "skipped", "no correctly classified sample in the subset")
    with torch.enable_grad():
        x_in = ctx.x[idx].clone().requires_grad_(True)
        loss = F.cross_entropy(ctx.model(x_in), ctx.y[idx], reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_in, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x_in)
    flat = grad.detach().flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    zero = finite & (flat.abs().amax(dim=1) == 0)
    bad, m = count(zero | ~finite), idx.numel()
    measured = (f"{bad} of {m} correctly classified points ({bad / m:.0%}) have a zero ({count(zero)}) or "
                f"non-finite ({count(~finite)}) input gradient of the cross-entropy")
    ok = bad / m <= ZERO_GRADIENT_FRACTION
    return ctx.verdict("zero-gradients", ok, measured if ok else (
        f"{measured}: gradients are masked (quantization or another non-differentiable step, or logits so "
        f"large that the softmax saturates), so gradient attacks cannot move. Fix: declare non-differentiable "
        f"preprocessing as a defense with a BPDA backward (robustness.defenses.defend(model, BitDepth(...)) with "
        f"gradient_mode='adaptive'), use a margin loss on logits, and add a black-box attack ('square')"))


class AutogradCalls(TorchFunctionMode):
    """Counts the autograd entry points called while it is active (a thread-local mode, popped on exit).

    ``torch.autograd.grad``, ``torch.autograd.backward`` and ``Tensor.backward`` all dispatch
    through ``__torch_function__``, so an active mode sees every call, including those made
    by ``torch.autograd.functional`` and ``torch.func.grad``; nothing global is patched.
    """

    WATCHED: dict[Any, str] = {
        torch.autograd.grad: "torch.autograd.grad",
        torch.autograd.backward: "torch.autograd.backward",
        torch.Tensor.backward: "Tensor.backward",
    }

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = self.WATCHED.get(func)
        if name is not None:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def dynamic_forward(ctx: CheckContext) -> Check:
    x_in = ctx.x.clone().requires_grad_(True)
    with torch.enable_grad(), AutogradCalls() as calls:
        ctx.model(x_in)
    if not calls.calls:
        return Check("dynamic-forward", "passed", f"one forward pass on {ctx.n} inputs (input gradient on) "
                     f"made no autograd call")
    made = ", ".join(f"{k} x{v}" for k, v in sorted(calls.calls.items()))
    return ctx.verdict("dynamic-forward", False, (
        f"one forward pass on {ctx.n} inputs called autograd itself ({made}): a dynamic defense (test-time "
        f"optimization, gradient-based purification or detection) whose output depends on gradients, which "
        f"standard attacks differentiate through poorly or not at all. Fix: design an adaptive attack for "
        f"this defense (e.g. BPDA around the inner optimization, or attacking the whole procedure; Tramer et "
        f"al. 2020, 'On Adaptive Attacks to Adversarial Example Defenses') and report it"))


def too_few_classes(ctx: CheckContext) -> Check:
    needs: list[str] = []
    short: list[str] = []
    for name, attack in ctx.attacks.items():
        targets = getattr(attack, "target_classes", None)
        dlr = "dlr" in str(getattr(attack, "loss", "")).lower()
        if targets is None and not dlr:
            continue
        need = 4 if (targets is not None and dlr) else 3 if dlr else 2
        needs.append(f"{name} needs >= {need}")
        if ctx.num_classes < need:
            short.append(f"{name} needs at least {need} classes")
        if isinstance(targets, int) and targets > ctx.num_classes - 1:
            needs.append(f"{name} attacks {ctx.num_classes - 1} of its {targets} target classes (all wrong ones)")
    if not needs:
        return Check("too-few-classes", "skipped", "no targeted or DLR-loss attack in the evaluation")
    return ctx.verdict("too-few-classes", not short, (
        f"the model has {ctx.num_classes} classes; {'; '.join(needs)}" if not short else
        f"the model has {ctx.num_classes} classes but {'; '.join(short)} (the DLR loss uses the third and "
        f"fourth largest logits): its results are meaningless. Fix: use apgd-ce or pgd for this model"))
