"""robustness.loading: checkpoints, state dicts, TorchScript, factories, the shipped model, bad files."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustness.architectures import build_architecture
from robustness.datasets import load_dataset, to_tensors
from robustness.errors import InputError, RobustnessWarning
from robustness.integrity import weights_sha256
from robustness.loading import (
    CHECKPOINT_FORMAT,
    DEFAULT_MODEL_PATH,
    LoadedModel,
    default_model,
    load_model,
    save_checkpoint,
)
from robustness.model import NormalizedModel

# small versions of each architecture: (name, kwargs, input shape)
SMALL = [
    ("small-cnn", {"in_channels": 1, "num_classes": 10, "input_size": 8, "width": 4}, (1, 8, 8)),
    ("preact-resnet18", {"num_classes": 3, "in_channels": 3}, (3, 8, 8)),
    ("wrn-28-10", {"depth": 10, "widen_factor": 1, "num_classes": 4, "in_channels": 2}, (2, 8, 8)),
]


def _randomize_bn(net: nn.Module) -> nn.Module:
    """Give BatchNorm buffers non-default values, so a round trip that dropped them would show."""
    gen = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return net.eval()


def _reference_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = _randomize_bn(build_architecture("small-cnn", width=4))
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, net, arch="small-cnn", arch_kwargs={"width": 4}, mean=[0.3], std=[0.4], dataset="digits")
    return path


# ----------------------------------------------------------------------------- the shipped model


def test_default_model_is_accurate_on_digits() -> None:
    assert DEFAULT_MODEL_PATH.is_file() and DEFAULT_MODEL_PATH.stat().st_size < 1_000_000
    loaded = default_model()
    assert isinstance(loaded, LoadedModel) and isinstance(loaded.model, NormalizedModel)
    assert loaded.arch == "small-cnn" and loaded.dataset == "digits" and loaded.bounds == (0.0, 1.0)
    assert not loaded.model.training
    data = load_dataset("digits", split="test")
    x, y = to_tensors(data.dataset)
    with torch.no_grad():
        accuracy = float((loaded.model(x).argmax(dim=1) == y).float().mean())
    assert accuracy >= 0.95
    assert loaded.mean == pytest.approx(data.mean) and loaded.std == pytest.approx(data.std)
    assert loaded.meta["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    # the file holds only plain types and tensors
    raw = torch.load(DEFAULT_MODEL_PATH, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["version"] == 1


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("arch", "kwargs", "shape"), SMALL, ids=[a for a, _, _ in SMALL])
def test_checkpoint_round_trip(tmp_path: Path, arch: str, kwargs: dict[str, Any], shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = _randomize_bn(build_architecture(arch, **kwargs))
    mean, std = [0.5] * shape[0], [0.25] * shape[0]
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, net, arch=arch, arch_kwargs=kwargs, mean=mean, std=std, dataset="toy",
                    bounds=(0.0, 1.0), meta={"epochs": 3, "note": "x", "acc": torch.tensor(0.5)})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    loaded = load_model(str(path))
    assert loaded.arch == arch and loaded.dataset == "toy" and loaded.meta["epochs"] == 3
    assert isinstance(loaded.model, NormalizedModel) and not loaded.model.training
    x = torch.rand(2, *shape)
    with torch.no_grad():
        expected = net((x - 0.5) / 0.25)
        assert torch.allclose(loaded.model(x), expected, atol=1e-5)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "version", "arch", "arch_kwargs", "state_dict", "weights_sha256", "mean", "std",
                        "dataset", "input_shape", "bounds", "meta"}
    assert raw["weights_sha256"] == weights_sha256(net) == loaded.weights_sha256  # the weights, not the wrapper


def test_save_unwraps_normalized_model_and_overwrites_atomically(tmp_path: Path) -> None:
    net = NormalizedModel(build_architecture("small-cnn", width=4), mean=[0.2], std=[0.5])
    path = tmp_path / "m.pt"
    path.write_bytes(b"old contents")
    save_checkpoint(path, net, arch="small-cnn", arch_kwargs={"width": 4})
    loaded = load_model(str(path))
    assert loaded.mean == (pytest.approx(0.2),) and loaded.std == (0.5,)
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_save_rejects_bad_inputs(tmp_path: Path) -> None:
    net = build_architecture("small-cnn", width=4)
    with pytest.raises(InputError, match="unknown architecture"):
        save_checkpoint(tmp_path / "a.pt", net, arch="resnet", arch_kwargs={})
    with pytest.raises(InputError, match="does not match the architecture"):
        save_checkpoint(tmp_path / "a.pt", net, arch="small-cnn", arch_kwargs={"width": 8})
    with pytest.raises(InputError, match="meta.*holds a value of type object"):
        save_checkpoint(tmp_path / "a.pt", net, arch="small-cnn", arch_kwargs={"width": 4}, meta={"x": object()})
    with pytest.raises(InputError, match="both mean and std"):
        save_checkpoint(tmp_path / "a.pt", net, arch="small-cnn", arch_kwargs={"width": 4}, mean=[0.1])
    assert not any(tmp_path.iterdir())


def test_plain_state_dict_needs_arch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _randomize_bn(build_architecture("small-cnn", width=4, num_classes=6))
    path = tmp_path / "sd.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(InputError, match="plain state_dict.*--arch"):
        load_model(str(path))
    loaded = load_model(str(path), arch="small-cnn", mean=[0.1], std=[0.2])  # width and classes read off shapes
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - 0.1) / 0.2), atol=1e-5)
    bare = load_model(str(path), arch="small-cnn")
    assert not isinstance(bare.model, NormalizedModel) and bare.mean is None
    with pytest.raises(InputError, match="does not match the architecture 'preact-resnet18'"):
        load_model(str(path), arch="preact-resnet18")
    with pytest.raises(InputError, match="are for num_classes=6 but num_classes=10 was requested"):
        load_model(str(path), arch="small-cnn", num_classes=10)


def test_nested_and_wrapped_state_dicts(tmp_path: Path) -> None:
    net = build_architecture("small-cnn", width=4).eval()
    wrapped = NormalizedModel(net, [0.3], [0.4])
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in wrapped.state_dict().items()}},
               tmp_path / "nested.pt")
    loaded = load_model(str(tmp_path / "nested.pt"), arch="small-cnn")
    assert loaded.mean == (pytest.approx(0.3),)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), wrapped(x), atol=1e-5)


def test_checkpoint_arguments_must_agree(tmp_path: Path) -> None:
    path = _reference_checkpoint(tmp_path)
    assert load_model(str(path), arch="small-cnn", num_classes=10, mean=[0.3], std=[0.4]).arch == "small-cnn"
    with pytest.raises(InputError, match="'small-cnn' checkpoint but arch='wrn-28-10'"):
        load_model(str(path), arch="wrn-28-10")
    with pytest.raises(InputError, match="normalization"):
        load_model(str(path), mean=[0.5], std=[0.5])


def test_torchscript(tmp_path: Path) -> None:
    net = build_architecture("small-cnn", width=4).eval()
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        torch.jit.save(torch.jit.trace(net, torch.rand(1, 1, 8, 8)), str(path))
    loaded = load_model(str(path), mean=[0.5], std=[0.5])
    assert loaded.arch is None and isinstance(loaded.model, NormalizedModel)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - 0.5) / 0.5), atol=1e-5)


def test_torchvision_spec_with_weights_none_is_untrained_and_says_so() -> None:
    # torchvision:NAME loads its DEFAULT pretrained weights (tests/robustness/test_source_torchvision.py);
    # weights="none" builds the untrained network
    with pytest.warns(RobustnessWarning, match="initial random weights"):
        loaded = load_model("torchvision:resnet18", num_classes=7, weights="none")
    assert loaded.arch == "torchvision:resnet18" and loaded.model.fc.out_features == 7
    assert loaded.initial_weights is True and "weights=None" in loaded.weights  # type: ignore[operator]
    assert loaded.info.initial_weights is True and loaded.warnings
    with pytest.warns(RobustnessWarning, match=r"initial random weights \(torchvision builds alexnet with weights="):
        assert load_model("torchvision:alexnet", num_classes=3, weights="None").initial_weights is True
    with pytest.raises(InputError, match="unknown torchvision model"):
        load_model("torchvision:resnet_does_not_exist", weights="none")
    with pytest.raises(InputError, match="unknown torchvision model"):
        load_model("torchvision:resnet_does_not_exist")


def _trained_like(net: nn.Module) -> nn.Module:
    """``net`` with its BatchNorm statistics updated by one batch in train mode, as training leaves them."""
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, 32, 32))
    return net.eval()


def test_a_torchvision_architecture_state_dict_loads_with_arch(tmp_path: Path) -> None:
    from torchvision import models

    torch.manual_seed(0)
    net = _trained_like(models.shufflenet_v2_x0_5(num_classes=10))
    path = tmp_path / "tv.pt"
    torch.save(net.state_dict(), path)
    with pytest.warns(RobustnessWarning, match=r"without normalization.*weights declare --mean 0.485,0.456,0.406"):
        loaded = load_model(str(path), arch="torchvision:shufflenet_v2_x0_5")
    assert loaded.arch == "torchvision:shufflenet_v2_x0_5" and loaded.initial_weights is False
    assert loaded.weights_sha256 == weights_sha256(net)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net(x), atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)  # normalized: nothing to warn about
        normalized = load_model(str(path), arch="torchvision:shufflenet_v2_x0_5", mean=[0.5] * 3, std=[0.2] * 3)
    assert normalized.info.normalization == {"mean": [0.5] * 3, "std": [0.2] * 3}
    with pytest.raises(InputError, match="unknown torchvision model"):
        load_model(str(path), arch="torchvision:shufflenet_v9")


def test_package_module_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_models_for_test.py").write_text(
        "from torch import nn\n"
        "def make(num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
        "def no_args():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))\n"
        "def not_a_model():\n"
        "    return 3\n"
        "def fixed():\n"
        "    net = nn.Linear(64, 2)\n"
        "    nn.init.constant_(net.weight, 0.5)\n"
        "    nn.init.zeros_(net.bias)\n"
        "    return net\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(3)
    before = torch.get_rng_state()
    with pytest.warns(RobustnessWarning, match="initial random weights.*returns other weights"):
        loaded = load_model("my_models_for_test:make", num_classes=5, mean=[0.5], std=[0.5])
    assert loaded.model(torch.rand(2, 1, 8, 8)).shape == (2, 5) and loaded.source == "my_models_for_test:make"
    assert loaded.initial_weights is True
    torch.set_rng_state(before)  # the second call ran under a forked random state: one call's draws, as without it
    assert torch.equal(torch.nn.Linear(64, 5).weight, loaded.model.model[1].weight)
    assert load_model("my_models_for_test:no_args", num_classes=5).model(torch.rand(1, 64)).shape == (1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)
        assert load_model("my_models_for_test:fixed").initial_weights is None  # deterministic: cannot tell
    with pytest.raises(InputError, match="expected a torch.nn.Module"):
        load_model("my_models_for_test:not_a_model")
    with pytest.raises(InputError, match="has no attribute"):
        load_model("my_models_for_test:absent")
    with pytest.raises(InputError, match="cannot import module"):
        load_model("no_such_package_xyz.models:make")


# ----------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_model(str(tmp_path / "absent.pt"))
    with pytest.raises(InputError, match="directory"):
        load_model(str(tmp_path))


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_device_file_is_not_called_a_directory() -> None:
    with pytest.raises(InputError, match="not a regular file"):
        load_model("/dev/null")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.01])
def test_truncated_checkpoint(tmp_path: Path, fraction: float) -> None:
    path = _reference_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError, match="corrupt or truncated.*re-download it, or re-save it"):
        load_model(str(path))


@pytest.mark.parametrize(
    "content",
    [
        b"\x13\x99 garbage bytes " * 40,
        b"",
        b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>\n",
        b"\n  <html><body>404 Not Found</body></html>",
        b"\x80\x02garbage after a pickle header",
        b"PK\x03\x04" + b"\x00" * 100,
    ],
    ids=["garbage", "empty", "html", "html-leading-space", "bad-pickle", "bad-zip"],
)
def test_corrupt_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="corrupt or truncated") as info:
        load_model(str(path), arch="small-cnn")
    if b"html" in content:
        assert "HTML" in str(info.value) and "download" in str(info.value)


def test_checkpoint_weights_must_match_their_recorded_sha256(tmp_path: Path) -> None:
    path = _reference_checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)
    assert load_model(str(path)).weights_sha256 == raw["weights_sha256"]
    assert "recorded SHA-256 verified" in load_model(str(path)).weights  # type: ignore[operator]
    raw["state_dict"]["head.3.bias"] = raw["state_dict"]["head.3.bias"] + 0.01  # a valid file, other weights
    torch.save(raw, path)
    with pytest.raises(InputError, match="does not hold the weights it was saved with.*SHA-256") as info:
        load_model(str(path))
    assert raw["weights_sha256"] in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_input_shape_is_recorded_and_checked(tmp_path: Path) -> None:
    path = _reference_checkpoint(tmp_path)
    assert torch.load(path, weights_only=True)["input_shape"] == [1, 8, 8]
    assert load_model(str(path), input_shape=(1, 8, 8)).input_shape == (1, 8, 8)
    with pytest.raises(InputError, match=r"inputs of shape 1x8x8 .* data has shape 1x16x16"):
        load_model(str(path), input_shape=(1, 16, 16))
    older = torch.load(DEFAULT_MODEL_PATH, weights_only=True)
    del older["input_shape"], older["weights_sha256"]  # as written before these fields
    older["arch_kwargs"]["input_size"] = 6
    torch.save(older, tmp_path / "older.pt")
    assert load_model(str(tmp_path / "older.pt")).input_shape == (1, 6, 6)  # from the architecture's arguments
    net = build_architecture("preact-resnet18", num_classes=10)
    save_checkpoint(tmp_path / "c.pt", net, arch="preact-resnet18", arch_kwargs={}, dataset="cifar10")
    assert load_model(str(tmp_path / "c.pt")).input_shape == (3, 32, 32)  # the named dataset's shape


def test_pickled_whole_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(InputError, match="pickled Python objects.*state_dict"):
        load_model(str(path), arch="small-cnn")


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(InputError, match="neither a robustness checkpoint nor a state_dict"):
        load_model(str(path), arch="small-cnn")


def test_newer_checkpoint_version(tmp_path: Path) -> None:
    path = _reference_checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)
    raw["version"] = 99
    torch.save(raw, path)
    with pytest.raises(InputError, match="upgrade"):
        load_model(str(path))
