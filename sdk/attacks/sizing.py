"""How images of any size meet a model that works at one resolution.

Editors feed a model images near its native resolution (512 px for SD 1.x, 128
for the bundled tiny model), so an attack is computed *through* that resize:
the perturbation lives at the photo's full size and the loss sees
``resize(x + δ)`` at the working size, with gradients flowing back through the
(antialiased, bilinear) resize. A photo at or below the model's resolution is
attacked as it is, apart from rounding its sides to a multiple of 8.

Two limits keep that affordable, checked by :func:`working_size` so that every
caller (``immunize``, jobs, the plugin's detection) gets them, and by
``immunize`` before any model is loaded:

* **aspect ratio** at most :data:`MAX_ASPECT_RATIO` (16:1). Only the short side
  is scaled down, so a 16x100 000 strip would reach the model at full length
  (1.6 million pixels, minutes and gigabytes per step). Wide panoramas are
  about 4:1 and web banners reach 8:1; 16:1 leaves room for both.
* **working area** at most :data:`MAX_WORKING_PIXELS`: the pixels the model sees
  after the resize. 2^22 is SD 1.x's 512 px at the full 16:1, SDXL's 1024 px at
  4:1, a 2048x2048 square; it binds only for models that work above 512 px (or
  a target that claims an absurd resolution), and such images can be downscaled.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import AttackSizeError, InputError

if TYPE_CHECKING:  # the limits and checks are torch-free: the CLI checks options with them
    import torch

#: Longest side over shortest side that an attack accepts.
MAX_ASPECT_RATIO = 16
#: Most pixels an attacked image may have at the model's working size.
MAX_WORKING_PIXELS = 1 << 22


def working_size(height: int, width: int, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """Scale so the short side is at most ``resolution``; round both sides to ``multiple``.

    Example:
        >>> working_size(1000, 1500, 512)
        (512, 768)
        >>> working_size(100, 130, 512)  # round() halves to even: 12.5 -> 12
        (96, 128)
    """
    check_attack_size(height, width, resolution)
    return _scaled(height, width, resolution, multiple)


def _scaled(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    scale = min(1.0, resolution / min(height, width))
    new_height, new_width = (
        max(multiple, round(side * scale / multiple) * multiple) for side in (height, width)
    )
    return new_height, new_width


def check_attack_size(height: int, width: int, resolution: int, *, name: str = "image") -> None:
    """Raise :class:`AttackSizeError` unless a ``height`` x ``width`` image is safe to attack
    at ``resolution`` (see the limits above); the message says how to fix the image.

    Example:
        >>> check_attack_size(1000, 1500, 512)  # a photo: fine
        >>> check_attack_size(16, 100_000, 512)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        photoimmune.sdk.errors.AttackSizeError: image: 100000x16 is 6250:1, ...
    """
    short, long = sorted((height, width))
    if short <= 0:
        raise AttackSizeError(f"{name}: {width}x{height} has no pixels; nothing to protect")
    if long > MAX_ASPECT_RATIO * short:
        ratio = f"{long / short:.1f}".removesuffix(".0")
        raise AttackSizeError(
            f"{name}: {width}x{height} is {ratio}:1, more elongated than the "
            f"{MAX_ASPECT_RATIO}:1 an attack accepts; crop it into pieces of at most "
            f"{MAX_ASPECT_RATIO}:1 and protect each, or pad it towards a square"
        )
    work_h, work_w = _scaled(height, width, resolution, 8)
    if work_h * work_w > MAX_WORKING_PIXELS:
        raise AttackSizeError(
            f"{name}: {width}x{height} would reach the model as {work_w}x{work_h} = "
            f"{work_h * work_w} pixels, over the limit of {MAX_WORKING_PIXELS}; "
            f"{_how_to_shrink(height, width)}"
        )


def _how_to_shrink(height: int, width: int) -> str:
    # Scaled to this area the short side falls below the model's resolution, so the
    # model sees the image as it is: about MAX_WORKING_PIXELS, whatever the model.
    factor = (MAX_WORKING_PIXELS / (height * width)) ** 0.5 * 0.98  # room for rounding to 8
    return f"downscale it to about {int(width * factor)}x{int(height * factor)} or crop it"


def check_photo_size(size: int, *, name: str = "size") -> None:
    """Refuse square photos of side ``size`` too large for the model to edit.

    An edit feeds the model the whole square, so its area is held to the working area
    an attack may reach the model with
    (:data:`MAX_WORKING_PIXELS`): a 2048 px square.

    Example:
        >>> check_photo_size(2048)
        >>> check_photo_size(100_000)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        photoimmune.sdk.errors.InputError: size 100000: ... use a size of at most 2048
    """
    if size * size > MAX_WORKING_PIXELS:
        largest = math.isqrt(MAX_WORKING_PIXELS) // 8 * 8  # the model's latent grid
        raise InputError(
            f"{name} {size}: the model would edit {size}x{size} = {size * size} pixels, over "
            f"the limit of {MAX_WORKING_PIXELS}; use a size of at most {largest}"
        )


def to_working(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a batch to ``size`` differentiably (identity when it already fits)."""
    import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def fill_like(pattern: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Tile a ``(1, 3, h, w)`` target image to cover ``size`` (flat targets just repeat)."""
    h, w = size
    reps = (1, 1, -(-h // pattern.shape[-2]), -(-w // pattern.shape[-1]))
    return pattern.repeat(*reps)[..., :h, :w]
