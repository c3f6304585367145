"""Runs only where CUDA is present (marker ``gpu``): the same evaluation on the GPU and the CPU
agrees, and the model goes back to the device it came from."""

from __future__ import annotations

import copy

import pytest
import torch

import robustness
from robustness.model import model_device

pytestmark = pytest.mark.gpu


def test_evaluate_on_cuda_matches_cpu_and_restores_device(trained_model, test_batch) -> None:
    x, y = test_batch
    kwargs = dict(attacks=["fgsm"], epsilons=[0.05, 0.1], progress=False)
    cpu = robustness.evaluate(trained_model, (x, y), device="cpu", **kwargs)
    gpu = robustness.evaluate(trained_model, (x, y), device="cuda", **kwargs)
    assert model_device(trained_model).type == "cpu"
    assert gpu.device.startswith("cuda")
    assert gpu.clean_accuracy == cpu.clean_accuracy
    for eps in (0.05, 0.1):  # FGSM is deterministic; allow a sample of float disagreement
        assert abs(gpu.robust_accuracy[eps] - cpu.robust_accuracy[eps]) <= 1 / x.shape[0] + 1e-9


def test_pgd_runs_on_the_inputs_device(trained_model, test_batch) -> None:
    from robustness.attacks import PGD

    model = copy.deepcopy(trained_model).cuda()  # the fixture is shared: never move it
    x, y = (t.cuda() for t in test_batch)
    adv = PGD(steps=5)(model, x, y, eps=0.1, generator=torch.Generator(device="cuda").manual_seed(0))
    assert adv.device.type == "cuda"
    assert (adv - x).abs().max() <= 0.1 + 1e-6


def test_data_already_on_the_gpu_is_evaluated_and_the_models_buffers_come_back(trained_model, test_batch) -> None:
    """CUDA tensors as data (they cannot be pinned), and the model's own buffer objects back after the move."""
    x, y = test_batch
    model = copy.deepcopy(trained_model)
    buffers = {name: buf for name, buf in model.named_buffers()}
    kwargs = dict(attacks=["fgsm"], epsilons=[0.1], progress=False, checks=False)
    on_gpu = robustness.evaluate(model, (x.cuda(), y.cuda()), device="cuda", **kwargs)
    on_cpu = robustness.evaluate(model, (x, y), device="cpu", **kwargs)
    assert abs(on_gpu.robust_accuracy[0.1] - on_cpu.robust_accuracy[0.1]) <= 1 / x.shape[0] + 1e-9
    assert model_device(model).type == "cpu"
    assert all(buf is buffers[name] for name, buf in model.named_buffers())
