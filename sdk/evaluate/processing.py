"""Common processing an immunized photo meets on its way to an editor.

Each entry maps uint8 ``(H, W, 3)`` pixels to pixels of the same size, the way
a re-upload would: real JPEG encoding (Pillow), a resize down and back up, a
light Gaussian blur. ``"none"`` is the photo as published.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter


def _jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def process(pixels: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    return process


def _resize(pixels: np.ndarray, factor: float = 0.5) -> np.ndarray:
    img = Image.fromarray(pixels)
    small = img.resize(
        (max(1, round(img.width * factor)), max(1, round(img.height * factor))),
        Image.Resampling.BICUBIC,
    )
    return np.asarray(small.resize(img.size, Image.Resampling.BICUBIC))


def _blur(pixels: np.ndarray, radius: float = 1.0) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius)))


ProcessingName = Literal["none", "jpeg95", "jpeg75", "jpeg50", "resize0.5", "blur1"]

#: name -> processing; ``"none"`` first.
PROCESSING: dict[ProcessingName, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda pixels: pixels,
    "jpeg95": _jpeg(95),
    "jpeg75": _jpeg(75),
    "jpeg50": _jpeg(50),
    "resize0.5": _resize,
    "blur1": _blur,
}
