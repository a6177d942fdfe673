"""Pictures for people: labelled comparison grids and loss curves (PIL only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_LABEL_HEIGHT = 18
_PAD = 4


def amplify_delta(original: np.ndarray, immunized: np.ndarray, gain: float = 10.0) -> np.ndarray:
    """Make a perturbation visible: ``0.5 + gain * δ``, as uint8 pixels.

    Example:
        >>> amplify_delta(np.zeros((1, 1, 3), np.uint8), np.ones((1, 1, 3), np.uint8))[0, 0, 0]
        138
    """
    delta = immunized.astype(np.float32) - original.astype(np.float32)
    return np.clip(127.5 + gain * delta, 0, 255).round().astype(np.uint8)


def comparison_grid(
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    tile: int = 192,
    columns: int | None = None,
) -> Image.Image:
    """Lay images out in a labelled grid, each scaled to ``tile`` pixels wide.

    Example:
        >>> grid = comparison_grid([np.zeros((8, 8, 3), np.uint8)] * 2, ["a", "b"], tile=32)
        >>> grid.size
        (72, 58)
    """
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    heights = [round(tile * im.shape[0] / im.shape[1]) for im in images]
    cell_h = max(heights) + _LABEL_HEIGHT
    canvas = Image.new(
        "RGB", (columns * (tile + _PAD) + _PAD, rows * (cell_h + _PAD) + _PAD), "white"
    )
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (im, label, h) in enumerate(zip(images, labels, heights, strict=True)):
        x0 = _PAD + (k % columns) * (tile + _PAD)
        y0 = _PAD + (k // columns) * (cell_h + _PAD)
        thumb = Image.fromarray(im).resize(
            (tile, h), Image.Resampling.NEAREST if im.shape[1] < tile else Image.Resampling.LANCZOS
        )
        canvas.paste(thumb, (x0, y0 + _LABEL_HEIGHT))
        draw.text((x0 + 2, y0 + 3), label, fill="black", font=font)
    return canvas


def loss_curve(
    history: Sequence[float], *, width: int = 360, height: int = 200, title: str = "loss"
) -> Image.Image:
    """Plot a loss history as a simple line chart.

    Example:
        >>> loss_curve([3.0, 2.0, 1.5]).size
        (360, 200)
    """
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = 44, 20, width - 10, height - 24
    draw.rectangle((left, top, right, bottom), outline="gray")
    draw.text((left, 4), title, fill="black")
    values = [float(v) for v in history]
    if not values:
        return canvas
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    draw.text((2, top), f"{high:.3g}", fill="black")
    draw.text((2, bottom - 10), f"{low:.3g}", fill="black")
    draw.text((right - 40, bottom + 6), f"{len(values)} steps", fill="black")
    points = [
        (
            left + (right - left) * i / max(1, len(values) - 1),
            bottom - (bottom - top) * (v - low) / span,
        )
        for i, v in enumerate(values)
    ]
    if len(points) > 1:
        draw.line(points, fill=(200, 30, 30), width=2)
    return canvas
