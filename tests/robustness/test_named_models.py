"""Public model names (robustness/named_models.py): robustness.load_model("digits-cnn") and the CLI's --model."""

from __future__ import annotations

import pytest
import torch

import robustness
from robustness import datasets, loading
from robustness.errors import InputError
from robustness.named_models import SHIPPED, model_names


@pytest.fixture(scope="module")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    data = datasets.load_dataset("digits", split="test")
    x, y = zip(*(data.dataset[i] for i in range(len(data.dataset))))
    return torch.stack(x), torch.as_tensor(y)


@pytest.mark.parametrize("name", ["digits-cnn", "digits-cnn-at"])
def test_load_model_by_name_is_ready_for_pixel_inputs(name, digits_test) -> None:
    model = robustness.load_model(name)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert isinstance(model, robustness.NormalizedModel)  # its normalization inside
    x, y = digits_test
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


def test_the_names_are_different_models_and_the_loader_keeps_the_name() -> None:
    a, b = (loading.load_model(n) for n in ("digits-cnn", "digits-cnn-at"))
    assert a.source == "digits-cnn" and b.source == "digits-cnn-at"
    assert a.weights_sha256 != b.weights_sha256
    assert a.weights_sha256 == loading.load_model(str(SHIPPED["digits-cnn"].path)).weights_sha256
    assert model_names() == ["digits-cnn", "digits-cnn-at"]


def test_an_unknown_name_lists_the_names() -> None:
    with pytest.raises(InputError, match=r"did you mean 'digits-cnn'\?.*model names: digits-cnn, digits-cnn-at"):
        robustness.load_model("digits-cn")


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits-cnn").write_bytes(b"<html>not a model</html>")
    with pytest.raises(InputError, match="digits-cnn"):  # the file is read (and refused), not the shipped model
        robustness.load_model("digits-cnn")


def test_the_loaded_description_reaches_evaluates_report_until_the_weights_change() -> None:
    import warnings

    import torch

    import robustness
    from robustness.errors import RobustnessWarning
    from robustness.loading import load_model as load_with_info

    expected = load_with_info("digits-cnn").info
    model = robustness.load_model("digits-cnn")
    from robustness.datasets import load_dataset

    data = load_dataset("digits", n=16, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobustnessWarning)
        report = robustness.evaluate(model, data.dataset, attacks=["fgsm"], epsilons=[0, 0.1], checks=False,
                                     progress=False)
    assert report.model == expected and report.model.source == "digits-cnn" and report.model.dataset == "digits"
    with torch.no_grad():  # fine-tuned after loading: the source stays named, its description no longer applies
        next(model.parameters()).add_(0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobustnessWarning)
        changed = robustness.evaluate(model, data.dataset, attacks=["fgsm"], epsilons=[0, 0.1], checks=False,
                                      progress=False).model
    assert changed.source == "digits-cnn" and changed.weights_sha256 != expected.weights_sha256
    assert "weights changed since" in changed.weights and changed.claims is None and changed.integrity is None
