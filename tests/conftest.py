"""Shared fixtures: the digits data and a tiny classifier trained on it once per session."""

from __future__ import annotations

import os

# Tiny models run fastest on one thread, and two test processes (a CLI subprocess, say) on two
# cores must not oversubscribe them: set before torch starts its thread pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from hypothesis import settings
from torch import nn

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Property tests draw the same examples on every run, so CI cannot turn red by chance;
# HYPOTHESIS_PROFILE=explore draws new ones (run it locally to look for new counterexamples).
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


class TinyCNN(nn.Module):
    """A few thousand parameters; trains on digits in about a second on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def train_tiny(seed: int = 0, epochs: int = 15) -> nn.Module:
    x_train, y_train, _, _ = _digits()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(y_train), generator=gen)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: digits in [0, 1], shape (N, 1, 8, 8)."""
    return _digits()


@pytest.fixture(scope="session")
def _trained_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in train_tiny().state_dict().items()}


@pytest.fixture()
def trained_model(_trained_state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh copy of the session's trained tiny CNN (eval mode), safe to mutate."""
    model = TinyCNN()
    model.load_state_dict(_trained_state)
    return model.eval()


@pytest.fixture()
def one_thread():
    """Run the test on one torch thread (tiny models train fastest and reproducibly so); restore after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def test_batch(digits: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """128 test images and labels."""
    return digits[2][:128], digits[3][:128]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need CUDA: skip them, saying why, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
