"""``timm:NAME``: pretrained weights read from the hub cache the test writes (offline), with the normalization
and input geometry their ``pretrained_cfg`` declares; ``--arch timm:NAME`` state dicts; wrong normalization."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

from robustness.errors import InputError, RobustnessWarning
from robustness.input_transform import InputTransform
from robustness.integrity import weights_sha256
from robustness.loading import load_model
from robustness.model import NormalizedModel
from robustness.sources import SourceOptions, load_from_source
from tests.robustness.hub_cache import TIMM_NAME, offline_hubs, timm_net, timm_resize, write_timm_cache


@pytest.fixture()
def hubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return offline_hubs(tmp_path, monkeypatch)


def _cfg(name: str = TIMM_NAME):
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name)


def test_cached_weights_load_with_the_declared_normalization_geometry_and_file_hash(hubs) -> None:
    net = timm_net(seed=1)
    path = write_timm_cache(hubs, net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)  # nothing to warn about
        loaded = load_from_source(f"timm:{TIMM_NAME}", SourceOptions(), "cpu")
    cfg = _cfg()
    assert isinstance(loaded.model, NormalizedModel)
    assert loaded.mean == tuple(cfg.mean) and loaded.std == tuple(cfg.std)
    assert loaded.model.mean.tolist() == pytest.approx(list(cfg.mean))
    x = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - mean) / std), atol=1e-5)  # the file, normalized once
    assert loaded.input_transform == InputTransform.from_crop_pct(160, cfg.crop_pct, cfg.interpolation)
    assert loaded.input_transform.to_dict() == {"size": [160, 160], "resize": timm_resize(), "interpolation": "bicubic"}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    info = loaded.info
    assert info.weights is not None and digest in info.weights and str(path) in info.weights
    assert loaded.meta["weights_file_sha256"] == digest
    assert info.weights_sha256 == weights_sha256(net)
    assert (info.name, info.arch, info.source) == (TIMM_NAME, "timm:test_vit", f"timm:{TIMM_NAME}")
    assert info.input_shape == [3, 160, 160] and info.initial_weights is False
    assert info.input_transform == loaded.input_transform.to_dict()
    assert info.normalization == {"mean": list(cfg.mean), "std": list(cfg.std)}


def test_a_name_without_tag_takes_timms_default_tag_and_a_pickle_file_is_read_safely(hubs) -> None:
    net = timm_net(seed=2)
    write_timm_cache(hubs, net, filename="pytorch_model.bin")  # no safetensors: the torch file is read
    loaded = load_model("timm:test_vit")
    assert loaded.name == TIMM_NAME and loaded.weights is not None and "pytorch_model.bin" in loaded.weights
    assert loaded.weights_sha256 == weights_sha256(net)


def test_weights_not_cached_offline_is_one_input_error_line_naming_the_cache(hubs) -> None:
    with pytest.raises(InputError) as info:
        load_model("timm:test_efficientnet.r160_in1k")
    text = str(info.value)
    assert "\n" not in text and "HF_HUB_OFFLINE" in text
    assert str(hubs.hf_cache / "models--timm--test_efficientnet.r160_in1k") in text


def test_unknown_names_and_tags_say_what_timm_has(hubs) -> None:
    with pytest.raises(InputError, match=r"unknown timm model 'test_vitt'.*did you mean.*test_vit"):
        load_model("timm:test_vitt")
    with pytest.raises(InputError, match=r"no pretrained weights 'test_vit.nope'.*test_vit.r160_in1k"):
        load_model("timm:test_vit.nope")


def test_a_damaged_cache_file_is_one_line(hubs) -> None:
    path = write_timm_cache(hubs, timm_net())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt or truncated") as info:
        load_model(f"timm:{TIMM_NAME}")
    assert "\n" not in str(info.value)


def test_the_users_normalization_replaces_the_declared_one_with_a_warning(hubs) -> None:
    net = timm_net(seed=3)
    write_timm_cache(hubs, net)
    imagenet_mean, imagenet_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # not test_vit's 0.5/0.5
    with pytest.warns(RobustnessWarning, match="another normalization than its weights declare"):
        loaded = load_model(f"timm:{TIMM_NAME}", mean=imagenet_mean, std=imagenet_std)
    assert any("another normalization" in w for w in loaded.warnings)  # so it reaches the report
    assert loaded.info.normalization == {"mean": imagenet_mean, "std": imagenet_std}
    x = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    m, s = torch.tensor(imagenet_mean).view(1, 3, 1, 1), torch.tensor(imagenet_std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - m) / s), atol=1e-5)  # only the user's, never both
    assert isinstance(loaded.model, NormalizedModel) and not isinstance(loaded.model.model, NormalizedModel)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)  # the declared statistics, given again: no warning
        same = load_model(f"timm:{TIMM_NAME}", mean=[0.5] * 3, std=[0.5] * 3)
    assert same.info.normalization == {"mean": [0.5] * 3, "std": [0.5] * 3}


def test_arch_timm_loads_a_users_state_dict_and_names_the_declared_statistics(hubs, tmp_path: Path) -> None:
    import timm

    torch.manual_seed(4)
    net = timm.create_model("test_vit", pretrained=False, num_classes=10).eval()
    torch.save(net.state_dict(), tmp_path / "mine.pt")
    with pytest.warns(RobustnessWarning, match=r"without normalization.*weights declare --mean 0.5,0.5,0.5 --std"):
        loaded = load_model(str(tmp_path / "mine.pt"), arch="timm:test_vit")
    assert loaded.arch == "timm:test_vit" and loaded.initial_weights is False
    assert loaded.weights_sha256 == weights_sha256(net)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        out = loaded.model(x)
        assert out.shape == (2, 10) and torch.allclose(out, net(x), atol=1e-5)  # num_classes from the weights
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)
        normalized = load_model(str(tmp_path / "mine.pt"), arch="timm:test_vit", mean=[0.5] * 3, std=[0.5] * 3)
    assert normalized.info.normalization == {"mean": [0.5] * 3, "std": [0.5] * 3}
    with pytest.raises(InputError, match="unknown timm model"):
        load_model(str(tmp_path / "mine.pt"), arch="timm:test_vitz")
