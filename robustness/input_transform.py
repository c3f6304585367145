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


#: the geometries: resize the shorter side then center-crop (the usual one), center-crop only (RobustBench's
#: "Crop288"), resize both sides to the size (RobustBench's "Res224": the aspect ratio is not kept)
MODES = ("resize-crop", "crop", "resize")


@dataclass(frozen=True)
class InputTransform:
    """Resize the shorter image side to ``resize`` pixels (``interpolation``), then center-crop to ``size``
    (``mode="resize-crop"``); or only center-crop to ``size`` (``mode="crop"``, ``resize`` is ``None``); or
    resize the image to exactly ``size`` (``mode="resize"``, ``resize`` is ``None``).

    Attributes:
        size: ``(H, W)`` of the model's inputs.
        resize: the shorter side after resizing, before the crop (``>= max(size)``); ``None`` for the
            other modes.
        interpolation: one of :data:`INTERPOLATIONS`.
        mode: one of :data:`MODES`.
    """

    size: tuple[int, int]
    resize: int | None
    interpolation: str = "bilinear"
    mode: str = "resize-crop"

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.size)
        if len(size) != 2 or min(size) <= 0:
            raise InputError(f"input size must be two positive integers (H, W), got {self.size!r}")
        object.__setattr__(self, "size", size)
        if self.mode not in MODES:
            raise InputError(f"unknown input transform mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.mode != "resize-crop":
            if self.resize is not None:
                raise InputError(f"mode {self.mode!r} takes no resize (got {self.resize}): it "
                                 f"{'only crops' if self.mode == 'crop' else 'resizes to the size itself'}")
        elif self.resize is None or int(self.resize) < max(size):
            raise InputError(f"resize ({self.resize}) must be at least the crop size {size}: the crop would not fit")
        else:
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
        out = {"size": list(self.size), "resize": self.resize, "interpolation": self.interpolation}
        return out if self.mode == "resize-crop" else {**out, "mode": self.mode}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputTransform:
        resize = data.get("resize")
        return cls(size=tuple(data["size"]), resize=None if resize is None else int(resize),  # type: ignore[arg-type]
                   interpolation=str(data.get("interpolation", "bilinear")),
                   mode=str(data.get("mode", "resize-crop")))

    def describe(self) -> str:
        """As reports say it: ``resize 256 / crop 224 bilinear``, ``crop 288``, ``resize to 224 bilinear``
        (``224x192`` for a size that is not square)."""
        h, w = self.size
        size = str(h) if h == w else f"{h}x{w}"
        if self.mode == "crop":
            return f"crop {size} (no resize)"
        if self.mode == "resize":
            return f"resize to {size} {self.interpolation} (no crop)"
        return f"resize {self.resize} / crop {size} {self.interpolation}"

    def torchvision(self) -> Any:
        """The torchvision transform ending in ``ToTensor()`` (values in [0, 1]): ``Resize(resize) ->
        CenterCrop(size)``, ``CenterCrop(size)`` or ``Resize(size)``, by :attr:`mode`."""
        from torchvision import transforms

        mode = getattr(transforms.InterpolationMode, self.interpolation.upper())
        if self.mode == "crop":
            steps = [transforms.CenterCrop(self.size)]
        elif self.mode == "resize":
            steps = [transforms.Resize(self.size, interpolation=mode)]
        else:
            steps = [transforms.Resize(self.resize, interpolation=mode), transforms.CenterCrop(self.size)]
        return transforms.Compose([*steps, transforms.ToTensor()])
