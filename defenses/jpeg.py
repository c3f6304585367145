"""JPEG compression as a preprocessing defense, with a BPDA identity backward pass.

Compressing the input removes some high-frequency adversarial noise (Dziugaite et al. 2016,
"A study of the effect of JPG compression on adversarial images"; Guo et al. 2018,
"Countering Adversarial Images using Input Transformations"). The transform is not
differentiable (rounding to uint8, quantized DCT coefficients, a round trip through
libjpeg on the CPU), so a plain gradient is zero; Athalye et al. 2018 ("Obfuscated
Gradients Give a False Sense of Security") break it with BPDA, the identity on the backward
pass, which is what :class:`JPEG` declares.

Shapes: ``(N, C, H, W)`` with ``C`` in ``{1, 3}``, inside ``bounds``; the output has the same
shape, dtype and device.

Example::

    from robustness.defenses import JPEG, defend
    defended = defend(model, JPEG(quality=75))
    logits = defended(x)
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from robustness.defenses.preprocessing import GradientHandling, Preprocessor, check_int_setting
from robustness.errors import InputError

__all__ = ["JPEG"]


class JPEG(Preprocessor):
    """Encode each image as a JPEG at ``quality`` and decode it again.

    Pixels are mapped from ``bounds`` to 0..255, rounded to uint8, compressed and decompressed
    per image with Pillow (libjpeg, on the CPU, in memory), then mapped back to ``bounds`` on
    the input's device and in its dtype. Grayscale (1 channel) and RGB (3 channels) images are supported.

    Gradient: ``bpda`` with the identity surrogate; in ``naive`` mode the output leaves autograd
    and the gradient is zero.

    Args:
        quality: JPEG quality, an integer in 1..100 (lower compresses more).
        bounds: the valid input range, default ``(0, 1)``.

    Example::

        jpeg = JPEG(quality=50)
        y = jpeg(x)            # x: (N, 3, 32, 32) in [0, 1] -> same shape, JPEG artefacts
    """

    gradient: ClassVar[GradientHandling] = "bpda"
    naive_gradient: ClassVar[str] = "zero (the uint8 round trip leaves autograd)"

    def __init__(self, quality: int = 75, *, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(bounds=bounds)
        self.quality = check_int_setting(quality, "JPEG quality", 1, 100)

    def settings(self) -> dict[str, Any]:
        return {"quality": self.quality}

    def transform(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if channels not in (1, 3):
            raise InputError(
                f"JPEG compresses grayscale or RGB images: the input has {channels} channels (shape "
                f"{tuple(x.shape)}); pass (N, 1, H, W) or (N, 3, H, W)"
            )
        low, high = self.bounds
        pixels = ((x.detach() - low) / (high - low) * 255.0).round().clamp(0, 255).to("cpu", torch.uint8)
        images = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C), what PIL reads
        decoded = np.stack([_round_trip(image, self.quality) for image in images]) if len(images) else images
        out = torch.from_numpy(decoded).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
        return (out / 255.0 * (high - low) + low).clamp(low, high)


def _round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """One ``(H, W, C)`` uint8 image, C in {1, 3}, encoded as JPEG at ``quality`` and decoded."""
    from PIL import Image

    mode = "L" if image.shape[2] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[:, :, 0] if mode == "L" else image), mode=mode).save(
        buffer, format="JPEG", quality=quality
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        array = np.asarray(decoded.convert(mode), dtype=np.uint8)
    return array.reshape(image.shape)
