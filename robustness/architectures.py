"""Model architectures used in the adversarial-robustness literature, built by name.

* :class:`SmallCNN`: a small conv-BN-ReLU network for 8x8 digits and 28x28 MNIST.
* :class:`PreActResNet18`: pre-activation ResNet-18 (He et al., "Identity Mappings in Deep
  Residual Networks", ECCV 2016), the CIFAR variant used by Wong et al. 2020 ("Fast is
  better than free") and Rice et al. 2020 ("Overfitting in adversarially robust deep learning").
* :class:`WideResNet`: wide residual network (Zagoruyko & Komodakis, "Wide Residual
  Networks", BMVC 2016), as used for Madry-style adversarial training on CIFAR (WRN-28-10,
  WRN-34-10).

Every network takes *normalized* inputs of shape ``(N, C, H, W)`` and returns logits of
shape ``(N, num_classes)``; wrap it in :class:`robustness.model.NormalizedModel` to feed it
pixel-space inputs.

Example::

    net = build_architecture("preact-resnet18", num_classes=10)
    logits = net(torch.rand(2, 3, 32, 32))           # (2, 10)
    build_architecture(default_architecture("digits"))  # SmallCNN()
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import Tensor, nn
from torch.nn import functional as F

from robustness.errors import InputError

__all__ = [
    "SmallCNN",
    "PreActBlock",
    "PreActResNet18",
    "WideBasicBlock",
    "WideResNet",
    "ARCHITECTURES",
    "build_architecture",
    "default_architecture",
]


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """A small CNN for low-resolution grey-scale digits (8x8 ``digits``, 28x28 MNIST).

    Two stages of ``[conv3x3-BN-ReLU] x 2 -> max-pool 2x2`` with ``width`` and ``2 * width``
    channels, adaptive average pooling to 2x2, and a two-layer linear head. Adaptive pooling
    makes the same weights shape work for any input of at least 4x4 pixels; ``input_size``
    records the size the network is meant for (it is validated and stored, so checkpoints
    describe their data, but it does not change the parameters).

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``.

    Example::

        net = SmallCNN(in_channels=1, num_classes=10, input_size=8, width=16)
        net(torch.rand(4, 1, 8, 8)).shape      # torch.Size([4, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 8, width: int = 32) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("width", width)
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 4:
            raise InputError(f"SmallCNN needs input_size >= 4 (two 2x2 poolings), got {input_size!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = input_size
        self.width = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            *_conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4, 4 * width),
            nn.ReLU(inplace=True),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``BN-ReLU-conv3x3-BN-ReLU-conv3x3`` plus a shortcut.

    When the shape changes, the shortcut is a strided 1x1 convolution applied to the
    pre-activated input (He et al. 2016, "Identity Mappings", Fig. 4(e)).
    """

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 for 32x32 images (CIFAR-10/100, SVHN).

    He et al. 2016; the layout used by Wong et al. 2020 and Rice et al. 2020: a 3x3 stem
    with 64 channels (no max-pool), four stages of two :class:`PreActBlock` with 64, 128,
    256, 512 channels and strides 1, 2, 2, 2, a final BN-ReLU, global average pooling and a
    linear layer. About 11.2M parameters for 10 classes.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)`` (any ``H, W >= 8``; 32 is standard).

    Example::

        net = PreActResNet18(num_classes=10)
        net(torch.rand(2, 3, 32, 32)).shape    # torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        layers: list[nn.Module] = []
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(PreActBlock(c_in, c_out, stride), PreActBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class WideBasicBlock(nn.Module):
    """Wide-ResNet basic block ``BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3`` with a shortcut.

    When the shape changes, the shortcut is a strided 1x1 convolution of the pre-activated
    input (Zagoruyko & Komodakis 2016).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = F.relu(self.bn2(self.conv1(out)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    """Wide residual network WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016).

    A 3x3 stem with 16 channels, three groups of ``(depth - 4) / 6`` :class:`WideBasicBlock`
    with ``16k, 32k, 64k`` channels (``k = widen_factor``) and strides 1, 2, 2, a final
    BN-ReLU, global average pooling and a linear layer. WRN-28-10 has about 36.5M
    parameters; WRN-34-10 is the Madry et al. 2018 CIFAR model.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)`` (32x32 is standard).

    Example::

        net = WideResNet(depth=10, widen_factor=1)   # a tiny one, for tests
        net(torch.rand(2, 3, 32, 32)).shape       # torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("widen_factor", widen_factor)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise InputError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout!r}")
        self.depth = depth
        self.widen_factor = widen_factor
        self.num_classes = num_classes
        self.in_channels = in_channels
        blocks_per_group = (depth - 4) // 6
        channels = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        groups: list[nn.Module] = []
        c_in = channels[0]
        for c_out, stride in zip(channels[1:], (1, 2, 2)):
            blocks = [WideBasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, float(dropout))
                      for i in range(blocks_per_group)]
            groups.append(nn.Sequential(*blocks))
            c_in = c_out
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(channels[3])
        self.fc = nn.Linear(channels[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def _wrn_28_10(**kwargs: Any) -> WideResNet:
    """WRN-28-10; ``depth``/``widen_factor`` may still be overridden (e.g. small ones in tests)."""
    kwargs.setdefault("depth", 28)
    kwargs.setdefault("widen_factor", 10)
    return WideResNet(**kwargs)


#: Architecture name -> factory taking keyword arguments (``num_classes``, ``in_channels``, ...).
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small-cnn": SmallCNN,
    "preact-resnet18": PreActResNet18,
    "wrn-28-10": _wrn_28_10,
}

_DEFAULTS = {
    "digits": "small-cnn",
    "mnist": "small-cnn",
    "fashion-mnist": "small-cnn",
    "cifar10": "preact-resnet18",
    "cifar100": "preact-resnet18",
    "svhn": "preact-resnet18",
}


def _factory_parameters(name: str) -> set[str]:
    target = WideResNet if name == "wrn-28-10" else ARCHITECTURES[name]
    return {p for p in inspect.signature(target).parameters if p != "self"}


def build_architecture(name: str, **kwargs: Any) -> nn.Module:
    """Build the architecture ``name`` (a key of :data:`ARCHITECTURES`) with ``kwargs``.

    Raises :class:`InputError` for an unknown name or a keyword the architecture does not take.

    Example::

        build_architecture("small-cnn", num_classes=10, width=16)
        build_architecture("wrn-28-10", num_classes=100, dropout=0.3)
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in ARCHITECTURES:
        raise InputError(f"unknown architecture {name!r}: use one of {', '.join(ARCHITECTURES)}")
    unknown = sorted(set(kwargs) - _factory_parameters(key))
    if unknown:
        raise InputError(
            f"architecture {key!r} does not take {', '.join(unknown)}: "
            f"it takes {', '.join(sorted(_factory_parameters(key)))}"
        )
    return ARCHITECTURES[key](**kwargs)


def default_architecture(dataset_name: str) -> str:
    """The usual architecture name for a dataset: ``small-cnn`` for digits, MNIST and
    Fashion-MNIST; ``preact-resnet18`` for CIFAR-10/100 and SVHN.

    Raises :class:`InputError` for other datasets (pass an architecture explicitly).
    """
    key = dataset_name.lower() if isinstance(dataset_name, str) else dataset_name
    key = {"fashion_mnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key not in _DEFAULTS:
        raise InputError(
            f"no default architecture for dataset {dataset_name!r} (known: {', '.join(_DEFAULTS)}): "
            f"choose one explicitly (--arch), one of {', '.join(ARCHITECTURES)}"
        )
    return _DEFAULTS[key]
