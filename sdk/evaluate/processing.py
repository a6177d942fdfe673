"""Processing an immunized photo meets on its way to an editor.

Each step maps uint8 ``(H, W, 3)`` pixels to pixels of the same size. The
common ones are what a re-upload does (:data:`PROCESSING`): real JPEG encoding
(Pillow), a resize down and back up, a light Gaussian blur. The others are
*purifiers* (:mod:`.purifiers`), what someone set on editing the photo runs
first: Gaussian noise, noisy upscaling, DiffPure and IMPRESS; the last two need
the model. ``"none"`` is the photo as published. :func:`processing_steps` builds
any of them by name.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageFilter


def _jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def process(pixels: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    return process


def resize_round_trip(
    pixels: np.ndarray,
    factor: float = 0.5,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> np.ndarray:
    """``pixels`` scaled by ``factor`` and back to their size (what a re-upload's resize does).

    Example:
        >>> resize_round_trip(np.full((6, 10, 3), 7, np.uint8)).shape
        (6, 10, 3)
    """
    img = Image.fromarray(pixels)
    small = img.resize(
        (max(1, round(img.width * factor)), max(1, round(img.height * factor))), resample
    )
    return np.asarray(small.resize(img.size, resample))


def _blur(pixels: np.ndarray, radius: float = 1.0) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius)))


ProcessingName = Literal[
    "none",
    "jpeg95",
    "jpeg75",
    "jpeg50",
    "resize0.5",
    "blur1",
    "gauss",
    "upscale",
    "diffpure",
    "impress",
]
#: Every processing step, ``"none"`` first, the model-free ones before those that need the model.
PROCESSING_NAMES: tuple[ProcessingName, ...] = get_args(ProcessingName)

#: name -> common processing (model-free, no purifiers); ``"none"`` first.
PROCESSING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda pixels: pixels,
    "jpeg95": _jpeg(95),
    "jpeg75": _jpeg(75),
    "jpeg50": _jpeg(50),
    "resize0.5": resize_round_trip,
    "blur1": _blur,
}


def processing_steps(
    names: Sequence[str], model: str | None = None, *, seed: int = 0
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The processing steps called ``names``, built once (``diffpure`` and ``impress`` load
    ``model``'s img2img pipeline, once for both).

    Args:
        names: entries of :data:`PROCESSING_NAMES`.
        model: the bundled model or diffusers folder the model-based purifiers use.
        seed: seed of the purifiers' noise.

    Example:
        >>> steps = processing_steps(["none", "gauss"])
        >>> pixels = np.full((8, 8, 3), 50, np.uint8)
        >>> steps["none"](pixels) is pixels, steps["gauss"](pixels).shape
        (True, (8, 8, 3))
    """
    from ..errors import InputError
    from . import purifiers

    unknown = [name for name in names if name not in PROCESSING_NAMES]
    if unknown:
        raise InputError(f"unknown processing {unknown}; use some of {', '.join(PROCESSING_NAMES)}")
    steps: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        name: PROCESSING[name] for name in names if name in PROCESSING
    }
    if "gauss" in names:
        steps["gauss"] = purifiers.GaussianNoise(seed=seed)
    if "upscale" in names:
        steps["upscale"] = purifiers.NoisyUpscale(seed=seed)
    if {"diffpure", "impress"} & set(names):
        if model is None:
            raise InputError("diffpure and impress purify with the model: pass model=")
        from ..models.pipelines import load_pipeline

        pipe = load_pipeline(model, "img2img")
        if "diffpure" in names:
            steps["diffpure"] = purifiers.DiffPure(pipe, seed=seed)
        if "impress" in names:
            steps["impress"] = purifiers.Impress(pipe.vae)
    return {name: steps[name] for name in names}
