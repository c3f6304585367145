"""The image preprocessing a model's weights declare: resize the shorter side, center-crop to the input size.

Pretrained weights come with the inputs they were trained on: timm's ``pretrained_cfg`` (``input_size``,
``crop_pct``, ``interpolation``), torchvision's ``weights.transforms()`` (``resize_size``, ``crop_size``,
``interpolation``) and RobustBench's ImageNet models (resize 256, center crop 224, "Res256Crop224").
:class:`InputTransform` is that geometry, and only that: the *normalization* the same sources declare
(mean/std) goes inside the model (:class:`robustness.model.NormalizedModel`), never into the data, so
attacks keep working in pixel space ``[0, 1]``.

A model source (:mod:`robustness.sources`) returns one with the model
(:attr:`robustness.loading.LoadedModel.input_transform`); the ``imagenet`` data source
(:func:`robustness.datasets.load_dataset`) applies it to the validation images, and the report's model
block records it.

Example::

    t = InputTransform(size=(224, 224), resize=256, interpolation="bilinear")
    t.to_dict()      # {'size': [224, 224], 'resize': 256, 'interpolation': 'bilinear'}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robustness.errors import InputError

__all__ = ["INTERPOLATIONS", "InputTransform"]

#: the interpolation modes torchvision's ``Resize`` accepts, by the names timm and torchvision use
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class InputTransform:
    """Resize the shorter image side to ``resize`` pixels (``interpolation``), then center-crop to ``size``.

    Attributes:
        size: ``(H, W)`` of the model's inputs after the crop.
        resize: the shorter side after resizing, before the crop (``>= max(size)``).
        interpolation: one of :data:`INTERPOLATIONS`.
    """

    size: tuple[int, int]
    resize: int
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.size)
        if len(size) != 2 or min(size) <= 0:
            raise InputError(f"input size must be two positive integers (H, W), got {self.size!r}")
        object.__setattr__(self, "size", size)
        if int(self.resize) < max(size):
            raise InputError(f"resize ({self.resize}) must be at least the crop size {size}: the crop would not fit")
        object.__setattr__(self, "resize", int(self.resize))
        mode = str(self.interpolation).lower().rsplit(".", 1)[-1]  # "InterpolationMode.BILINEAR" reads too
        if mode not in INTERPOLATIONS:
            raise InputError(f"unknown interpolation {self.interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")
        object.__setattr__(self, "interpolation", mode)

    @classmethod
    def from_crop_pct(cls, size: int | tuple[int, int], crop_pct: float, interpolation: str = "bilinear"
                      ) -> InputTransform:
        """timm's convention: resize to ``floor(size / crop_pct)``, then crop ``size``."""
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if not 0 < crop_pct <= 1:
            raise InputError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
        return cls(size=hw, resize=int(max(hw) / crop_pct), interpolation=interpolation)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "resize": self.resize, "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputTransform:
        return cls(size=tuple(data["size"]), resize=int(data["resize"]),  # type: ignore[arg-type]
                   interpolation=str(data.get("interpolation", "bilinear")))

    def torchvision(self) -> Any:
        """The torchvision transform: ``Resize(resize) -> CenterCrop(size) -> ToTensor()`` (values in [0, 1])."""
        from torchvision import transforms

        mode = getattr(transforms.InterpolationMode, self.interpolation.upper())
        return transforms.Compose([transforms.Resize(self.resize, interpolation=mode),
                                   transforms.CenterCrop(self.size), transforms.ToTensor()])
