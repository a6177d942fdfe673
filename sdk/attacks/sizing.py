"""How images of any size meet a model that works at one resolution.

Editors feed a model images near its native resolution (512 px for SD 1.x, 128
for the bundled tiny model), so an attack is computed *through* that resize:
the perturbation lives at the photo's full size and the loss sees
``resize(x + δ)`` at the working size, with gradients flowing back through the
(antialiased, bilinear) resize. A photo at or below the model's resolution is
attacked as it is, apart from rounding its sides to a multiple of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)


def working_size(height: int, width: int, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """Scale so the short side is at most ``resolution``; round both sides to ``multiple``.

    Example:
        >>> working_size(1000, 1500, 512)
        (512, 768)
        >>> working_size(100, 130, 512)
        (104, 128)
    """
    scale = min(1.0, resolution / min(height, width))
    return tuple(
        max(multiple, round(side * scale / multiple) * multiple) for side in (height, width)
    )


def to_working(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a batch to ``size`` differentiably (identity when it already fits)."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def fill_like(pattern: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Tile a ``(1, 3, h, w)`` target image to cover ``size`` (flat targets just repeat)."""
    h, w = size
    reps = (1, 1, -(-h // pattern.shape[-2]), -(-w // pattern.shape[-1]))
    return pattern.repeat(*reps)[..., :h, :w]
