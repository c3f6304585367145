"""The report's model block: which weights were measured, their normalization, trained or not."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import robustness
from robustness.errors import RobustnessWarning
from robustness.integrity import weights_sha256
from robustness.model import NormalizedModel
from robustness.model_info import ModelInfo, describe_model, untouched_batchnorm
from robustness.report import Report
from tests.conftest import TinyCNN

KW = dict(attacks=["fgsm"], epsilons=[0, 0.1], progress=False, checks=False)


def test_weights_sha256_is_the_same_in_memory_from_a_file_and_after_a_copy(trained_model, tmp_path) -> None:
    torch.save(trained_model.state_dict(), tmp_path / "sd.pt")
    from_file = torch.load(tmp_path / "sd.pt", weights_only=True)
    reordered = dict(reversed(from_file.items()))
    assert weights_sha256(trained_model) == weights_sha256(from_file) == weights_sha256(reordered)
    with torch.no_grad():
        trained_model.head.bias[0] += 1e-6
    assert weights_sha256(trained_model) != weights_sha256(from_file)


def test_every_evaluation_records_the_weights_and_the_normalization(trained_model, test_batch, tmp_path) -> None:
    x, y = test_batch[0][:16], test_batch[1][:16]
    bare = robustness.evaluate(trained_model, (x, y), **KW)
    assert bare.model.weights_sha256 == weights_sha256(trained_model)
    assert bare.model.normalization is None and bare.model.initial_weights is None and bare.model.source is None
    wrapped = NormalizedModel(trained_model, mean=[0.0], std=[1.0])
    report = robustness.evaluate(wrapped, (x, y), **KW)
    assert report.model.weights_sha256 == weights_sha256(trained_model)  # the network, not its wrapper
    assert report.model.normalization == {"mean": [0.0], "std": [1.0]}
    report.save(tmp_path)
    block = json.loads((tmp_path / "report.json").read_text())["model"]
    assert block["weights_sha256"] == weights_sha256(trained_model) and block["normalization"]["std"] == [1.0]
    md = (tmp_path / "report.md").read_text()
    assert f"SHA-256 {weights_sha256(trained_model)}" in md and "normalization: mean [0.0], std [1.0]" in md
    assert "normalization: none" in bare.to_markdown()


def test_an_untrained_network_warns_and_is_recorded(test_batch) -> None:
    torch.manual_seed(0)
    fresh = TinyCNN().eval()
    assert untouched_batchnorm(fresh) and describe_model(fresh).initial_weights is True
    with pytest.warns(RobustnessWarning, match="initial random weights.*BatchNorm"):
        report = robustness.evaluate(fresh, (test_batch[0][:8], test_batch[1][:8]), **KW)
    assert report.model.initial_weights is True and any("initial random weights" in w for w in report.warnings)
    assert "initial random weights: **yes**" in report.to_markdown()


def test_a_trained_network_does_not_warn(trained_model, test_batch) -> None:
    assert not untouched_batchnorm(trained_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)
        report = robustness.evaluate(trained_model, (test_batch[0][:8], test_batch[1][:8]), **KW)
    assert report.model.initial_weights is None and not report.warnings


def test_old_reports_whose_model_is_a_string_still_read(trained_model, test_batch) -> None:
    data = robustness.evaluate(trained_model, (test_batch[0][:8], test_batch[1][:8]), **KW).to_dict()
    back = Report.from_dict(json.loads(json.dumps(data)))
    assert back.model == ModelInfo.from_dict(data["model"])
    assert back.model.weights_sha256 == data["model"]["weights_sha256"]
    data["model"] = "old-model.pt"
    old = Report.from_dict(data)
    assert old.model == ModelInfo(source="old-model.pt") and "- model: old-model.pt" in old.to_markdown()
    data["model"] = None
    assert Report.from_dict(data).model is None and "in-memory model" in Report.from_dict(data).to_markdown()
