from __future__ import annotations

import numpy as np
import pytest
import torch

from robustness.attacks import FGSM
from robustness.errors import InputError
from robustness.norms import norm_of
from tests.art_utils import art_classifier


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_equals_art_fast_gradient_method(norm, eps, trained_model, test_batch) -> None:
    from art.attacks.evasion import FastGradientMethod

    x, y = test_batch
    ours = FGSM(norm=norm)(trained_model, x, y, eps=eps)
    art = FastGradientMethod(art_classifier(trained_model), norm=np.inf if norm == "linf" else 2, eps=eps)
    theirs = torch.from_numpy(art.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()]))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_l2_step_has_length_eps_unless_clipped(trained_model, test_batch) -> None:
    x, y = test_batch
    out = FGSM(norm="l2")(trained_model, x, y, eps=0.5, bounds=(-10.0, 10.0))
    assert torch.allclose(norm_of(out - x, "l2"), torch.full((x.shape[0],), 0.5), atol=1e-5)


def test_targeted_moves_towards_target(trained_model, test_batch) -> None:
    x, y = test_batch
    target = (y + 1) % 10
    out = FGSM()(trained_model, x, y, eps=0.1, target=target)
    gain = trained_model(out).log_softmax(1).gather(1, target[:, None]) - trained_model(x).log_softmax(1).gather(
        1, target[:, None]
    )
    assert (gain > 0).float().mean() > 0.9


@pytest.mark.parametrize("kwargs", [{"norm": "l0"}, {"loss": "hinge"}])
def test_bad_settings_raise(kwargs) -> None:
    with pytest.raises(InputError):
        FGSM(**kwargs)


def test_is_immutable() -> None:
    attack = FGSM()
    with pytest.raises(AttributeError):
        attack.norm = "l2"  # type: ignore[misc]


@pytest.mark.parametrize("eps", [-0.1, float("nan"), "0.1", None])
def test_bad_eps_raises(eps, trained_model, test_batch) -> None:
    x, y = test_batch
    with pytest.raises(InputError, match="eps"):
        FGSM()(trained_model, x, y, eps=eps)
