"""``torchvision:NAME``: weights from torch.hub's cache the test writes (offline), with the normalization and
geometry ``weights.transforms()`` declares, the hash-prefix check of the file, and the claims from its meta."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

import robustness
from robustness.errors import InputError, RobustnessWarning
from robustness.input_transform import InputTransform
from robustness.integrity import weights_sha256
from robustness.loading import load_model
from robustness.model import NormalizedModel
from robustness.sources import SourceOptions, load_from_source
from tests.robustness.hub_cache import (TORCHVISION_NAME, offline_hubs, torchvision_net,
                                        write_torchvision_cache)


@pytest.fixture()
def hubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return offline_hubs(tmp_path, monkeypatch)


def _weights():
    from torchvision import models

    return models.get_model_weights(TORCHVISION_NAME).DEFAULT


def test_default_weights_load_from_the_cache_with_their_declared_preprocessing(hubs) -> None:
    net = torchvision_net(seed=1)
    path = write_torchvision_cache(hubs, net)
    loaded = load_from_source(f"torchvision:{TORCHVISION_NAME}", SourceOptions(), "cpu")
    # our random weights are not the published file: its SHA-256 does not start with the name's prefix
    with pytest.warns(RobustnessWarning, match=r"not the prefix b8a52dc0 its name carries: these are not the "):
        assert load_model(f"torchvision:{TORCHVISION_NAME}").weights_sha256 == loaded.weights_sha256
    transform = _weights().transforms()
    assert isinstance(loaded.model, NormalizedModel)
    assert list(loaded.mean) == pytest.approx(transform.mean) and list(loaded.std) == pytest.approx(transform.std)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    m, s = torch.tensor(transform.mean).view(1, 3, 1, 1), torch.tensor(transform.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - m) / s), atol=1e-4)
    assert loaded.input_transform == InputTransform(size=(224, 224), resize=256, interpolation="bilinear")
    assert loaded.input_transform.resize == transform.resize_size[0] and loaded.input_shape == (3, 224, 224)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    info = loaded.info
    assert digest in (info.weights or "") and "does NOT match the prefix b8a52dc0" in (info.integrity or "")
    assert any("not the published" in w for w in loaded.warnings)  # recorded, so it reaches the report
    assert info.weights_sha256 == weights_sha256(net) and info.initial_weights is False
    assert (info.name, info.arch) == (TORCHVISION_NAME, f"torchvision:{TORCHVISION_NAME}")
    acc1 = _weights().meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert info.claims == {"source": "torchvision weights meta", "metric": "clean", "clean_accuracy": acc1 / 100,
                           "robust_accuracy": None, "norm": None, "eps": None, "dataset": "imagenet"}


def test_weights_by_member_or_full_name_and_bad_names(hubs) -> None:
    write_torchvision_cache(hubs, torchvision_net())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobustnessWarning)
        a = load_model(f"torchvision:{TORCHVISION_NAME}", weights="IMAGENET1K_V1")
        b = load_model(f"torchvision:{TORCHVISION_NAME}", weights="SqueezeNet1_1_Weights.IMAGENET1K_V1")
        c = load_model(f"torchvision:{TORCHVISION_NAME}", weights="default")
    assert a.weights_sha256 == b.weights_sha256 == c.weights_sha256
    with pytest.raises(InputError, match=r"has no weights 'IMAGENET1K_V9': use one of IMAGENET1K_V1, DEFAULT"):
        load_model(f"torchvision:{TORCHVISION_NAME}", weights="IMAGENET1K_V9")
    with pytest.raises(InputError, match=r"not weights of torchvision:squeezenet1_1"):
        load_model(f"torchvision:{TORCHVISION_NAME}", weights="ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(InputError, match=r"unknown torchvision model 'squeezenet1_2'.*squeezenet1_1"):
        load_model("torchvision:squeezenet1_2")
    with pytest.raises(InputError, match="names torchvision weights"):
        load_model("digits-cnn", weights="DEFAULT")


def test_weights_not_cached_and_no_network_is_one_input_error_line(hubs) -> None:
    with pytest.raises(InputError) as info:
        load_model("torchvision:mobilenet_v3_small")
    text = str(info.value)
    expected = hubs.torch_home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert "\n" not in text and str(expected) in text and "could not be downloaded" in text
    assert not expected.exists()


def test_weights_none_is_the_untrained_network_through_the_python_api(hubs) -> None:
    with pytest.warns(RobustnessWarning, match="initial random weights"):
        model = robustness.load_model(f"torchvision:{TORCHVISION_NAME}", weights="none")
    assert not isinstance(model, NormalizedModel)  # nothing declared, nothing given


def test_the_users_normalization_replaces_the_declared_one_with_a_warning(hubs) -> None:
    net = torchvision_net(seed=2)
    write_torchvision_cache(hubs, net)
    with pytest.warns(RobustnessWarning) as record:
        loaded = load_model(f"torchvision:{TORCHVISION_NAME}", mean=[0.5] * 3, std=[0.25] * 3)
    assert any("another normalization than its weights declare" in str(r.message) for r in record)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - 0.5) / 0.25), atol=1e-4)  # one normalization only
    assert loaded.info.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3}
