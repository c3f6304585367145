"""The point of declaring gradients: a defense that only hides gradients looks robust to a
naive attack and falls to the adaptive one (BPDA, Athalye et al. 2018), end to end through
``robustness.evaluate``; and a defended model comes back from an evaluation unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import robustness
from robustness.attacks import PGD
from robustness.defenses import JPEG, BitDepth, GaussianNoise, defend, describe_defenses, gradient_mode
from robustness.errors import RobustnessWarning

EPS = 0.15
PGD10 = PGD(steps=10)


def _evaluate(model: torch.nn.Module, data: Any, mode: str, **kwargs: Any) -> robustness.Report:
    """``robustness.evaluate`` with ``gradient_mode=mode`` (the runner sets it on every Defended)."""
    return robustness.evaluate(model, data, gradient_mode=mode, **kwargs)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def test_bit_depth_looks_robust_to_naive_pgd_and_falls_to_bpda(trained_model, test_batch) -> None:
    x, y = test_batch
    defended = defend(trained_model, BitDepth(bits=3))
    kwargs = {"attacks": [PGD10], "epsilons": [0, EPS], "seed": 0, "progress": False}
    with pytest.warns(RobustnessWarning, match="naive"):
        naive = _evaluate(defended, (x, y), "naive", **kwargs)
    adaptive = _evaluate(defended, (x, y), "adaptive", **kwargs)
    assert defended.gradient_mode == "adaptive"
    undefended = robustness.evaluate(trained_model, (x, y), **kwargs)
    assert naive.clean_accuracy == adaptive.clean_accuracy >= 0.95  # the squeeze keeps clean accuracy
    assert naive.robust_accuracy[EPS] >= 0.90  # zero gradients: PGD never moves past its random start
    assert adaptive.robust_accuracy[EPS] <= 0.50
    assert naive.robust_accuracy[EPS] - adaptive.robust_accuracy[EPS] >= 0.40
    # the squeeze buys little real robustness: BPDA gets close to the undefended model's number
    assert adaptive.robust_accuracy[EPS] <= undefended.robust_accuracy[EPS] + 0.20


def test_jpeg_looks_robust_to_naive_pgd_and_falls_to_bpda(trained_model, test_batch) -> None:
    x, y = test_batch
    defended = defend(trained_model, JPEG(quality=75), gradient_mode="naive")
    naive = _accuracy(defended, PGD10(defended, x, y, eps=EPS, generator=torch.Generator().manual_seed(0)), y)
    with gradient_mode(defended, "adaptive"):
        adaptive = _accuracy(defended, PGD10(defended, x, y, eps=EPS, generator=torch.Generator().manual_seed(0)), y)
    assert _accuracy(defended, x, y) >= 0.95
    assert naive >= 0.90
    assert adaptive <= 0.50
    assert naive - adaptive >= 0.40


def test_defended_model_comes_back_unchanged_from_evaluate(trained_model, test_batch) -> None:
    x, y = test_batch[0][:64], test_batch[1][:64]
    defended = defend(trained_model, GaussianNoise(std=0.05, eot_samples=2, seed=0), BitDepth(bits=4),
                      gradient_mode="naive")
    defended.train()
    trained_model.features[1].eval()  # a mixed mode must survive too
    before = {k: v.clone() for k, v in defended.state_dict().items()}
    modes = [m.training for m in defended.modules()]
    with gradient_mode(defended, "adaptive"):
        report = robustness.evaluate(defended, (x, y), attacks=["fgsm", PGD(steps=3)], epsilons=[0.1], progress=False)
    after = defended.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert modes == [m.training for m in defended.modules()]
    assert all(p.grad is None for p in defended.parameters())
    assert defended.gradient_mode == "naive"
    assert 0.0 <= report.robust_accuracy[0.1] <= report.clean_accuracy


def test_report_records_the_gradient_mode_and_the_defenses(trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    defended = defend(trained_model, JPEG(quality=75), gradient_mode="naive")
    kwargs = {"attacks": ["fgsm"], "epsilons": [0.1], "progress": False}
    report = robustness.evaluate(defended, (x, y), gradient_mode="adaptive", **kwargs)
    assert defended.gradient_mode == "naive"  # restored
    assert report.gradient_mode == "adaptive"
    with gradient_mode(defended, "adaptive"):
        assert report.defenses == describe_defenses(defended)
    again = robustness.Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.gradient_mode == "adaptive" and again.defenses == report.defenses
    assert "JPEG(quality=75): BPDA (identity backward)" in report.to_markdown()
    with pytest.warns(RobustnessWarning, match="naive"):
        naive = robustness.evaluate(defended, (x, y), gradient_mode=None, **kwargs)  # the Defended's own mode
    assert naive.gradient_mode is None and naive.defenses[0]["gradient_mode"] == "naive"
    with pytest.raises(robustness.InputError, match="bounds"):
        robustness.evaluate(defend(trained_model, JPEG(bounds=(0, 255))), (x, y), **kwargs)
