"""robustness.architectures: shapes, parameter counts, names."""

from __future__ import annotations

import pytest
import torch

from robustness.architectures import (
    ARCHITECTURES,
    PreActResNet18,
    SmallCNN,
    WideResNet,
    build_architecture,
    default_architecture,
)
from robustness.errors import InputError


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("in_channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_small_cnn_shapes(in_channels: int, size: int) -> None:
    net = SmallCNN(in_channels=in_channels, num_classes=7, input_size=size, width=8).eval()
    assert net(torch.rand(3, in_channels, size, size)).shape == (3, 7)


def test_preact_resnet18_shapes_and_size() -> None:
    torch.manual_seed(0)
    net = PreActResNet18(num_classes=5, in_channels=1).eval()
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 5)
    with torch.device("meta"):
        assert _count(PreActResNet18()) == pytest.approx(11.17e6, rel=0.01)


def test_wide_resnet_small_forward_and_28_10_size() -> None:
    torch.manual_seed(0)
    net = WideResNet(depth=10, widen_factor=1, num_classes=4, dropout=0.3).eval()
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    assert len(net.block1) == 1
    with torch.device("meta"):  # no memory, no forward: just count WRN-28-10's parameters
        big = build_architecture("wrn-28-10")
        assert _count(big) == pytest.approx(36.5e6, rel=0.005)
        assert len(big.block1) == 4 and big.fc.in_features == 640


def test_build_architecture_passes_kwargs() -> None:
    net = build_architecture("small-cnn", num_classes=3, width=4)
    assert isinstance(net, SmallCNN) and net.width == 4 and net.head[-1].out_features == 3
    wrn = build_architecture("WRN-28-10", depth=10, widen_factor=2, num_classes=3)
    assert isinstance(wrn, WideResNet) and wrn.depth == 10 and wrn.fc.in_features == 128
    assert set(ARCHITECTURES) == {"small-cnn", "preact-resnet18", "wrn-28-10"}


def test_bad_names_and_arguments() -> None:
    with pytest.raises(InputError, match="unknown architecture.*small-cnn.*preact-resnet18.*wrn-28-10"):
        build_architecture("resnet50")
    with pytest.raises(InputError, match="does not take width"):
        build_architecture("preact-resnet18", width=3)
    with pytest.raises(InputError, match="6n \\+ 4"):
        WideResNet(depth=12)
    with pytest.raises(InputError, match="num_classes"):
        SmallCNN(num_classes=0)
    with pytest.raises(InputError, match="input_size"):
        SmallCNN(input_size=2)
    with pytest.raises(InputError, match="dropout"):
        WideResNet(depth=10, widen_factor=1, dropout=1.5)


@pytest.mark.parametrize(
    ("dataset", "arch"),
    [("digits", "small-cnn"), ("mnist", "small-cnn"), ("fashion-mnist", "small-cnn"),
     ("cifar10", "preact-resnet18"), ("CIFAR100", "preact-resnet18"), ("svhn", "preact-resnet18")],
)
def test_default_architecture(dataset: str, arch: str) -> None:
    assert default_architecture(dataset) == arch
    assert arch in ARCHITECTURES


def test_default_architecture_unknown_dataset() -> None:
    with pytest.raises(InputError, match="no default architecture.*--arch"):
        default_architecture("imagenet")
