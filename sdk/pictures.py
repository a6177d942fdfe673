"""Pictures for people: comparison grids, loss curves, bar and scatter charts (PIL only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_LABEL_HEIGHT = 18
_PAD = 4


def amplify_delta(original: np.ndarray, immunized: np.ndarray, gain: float = 10.0) -> np.ndarray:
    """Make a perturbation visible: ``0.5 + gain * δ``, as uint8 pixels.

    Example:
        >>> int(amplify_delta(np.zeros((1, 1, 3), np.uint8), np.ones((1, 1, 3), np.uint8))[0, 0, 0])
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
        >>> grid.size  # two 32 px tiles and 4 px margins; an 18 px label under each
        (76, 58)
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


_BAR_COLOURS = [(90, 90, 90), (30, 110, 200), (210, 90, 30), (40, 160, 80), (150, 60, 170)]


def bar_chart(
    values: dict[str, dict[str, float]], *, title: str = "", height: int = 220
) -> Image.Image:
    """Grouped bars: one group per metric, one bar per series, each metric scaled to its max.

    ``values`` maps a series (a method) to its metric values. Each bar is labelled
    with its value, since metrics differ in range (SSIM ≤ 1, PSNR in dB).

    Example:
        >>> values = {"noise": {"ssim": 0.9, "psnr": 30.0}, "encoder": {"ssim": 0.8, "psnr": 25.0}}
        >>> bar_chart(values).size
        (320, 220)
    """
    series = list(values)
    metrics = list(next(iter(values.values()), {}))
    group = 24 * max(1, len(series)) + 24
    width = 56 + group * max(1, len(metrics)) + 120
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top, bottom, left = 28, height - 24, 40
    draw.text((left, 6), title, fill="black")
    draw.line((left, bottom, left + group * len(metrics), bottom), fill="gray")
    for m, metric in enumerate(metrics):
        scale = max((abs(values[s][metric]) for s in series), default=1.0) or 1.0
        x0 = left + m * group + 12
        draw.text((x0, bottom + 6), metric, fill="black")
        for k, name in enumerate(series):
            value = values[name][metric]
            y = bottom - (bottom - top - 14) * max(0.0, value) / scale
            colour = _BAR_COLOURS[k % len(_BAR_COLOURS)]
            draw.rectangle((x0 + 24 * k, y, x0 + 24 * k + 18, bottom), fill=colour)
            draw.text((x0 + 24 * k - 2, y - 12), f"{value:.3g}", fill="black")
    _legend(draw, series, width - 110, top)
    return canvas


def _legend(draw: ImageDraw.ImageDraw, names: Sequence[str], x: float, y: float) -> None:
    """A colour swatch and a name per series, one under another, in the series' colours."""
    for k, name in enumerate(names):
        colour = _BAR_COLOURS[k % len(_BAR_COLOURS)]
        draw.rectangle((x, y + 16 * k, x + 10, y + 16 * k + 10), fill=colour)
        draw.text((x + 14, y + 16 * k), name, fill="black")


_GOAL_SHADE = (214, 238, 214)


def _axis(values: list[float]) -> tuple[float, float, float]:
    """A round step and the axis' two ends on it: from 0 (or below the smallest value,
    if one is negative) to a little past the largest, in at most six steps."""
    low, high = min([0.0, *values]), max([0.0, *values])
    span = 1.08 * (high - low) or 1.0
    step = next(m * 10.0**e for e in range(-6, 7) for m in (1, 2, 5) if span / (m * 10.0**e) <= 6)
    return step, step * (low // step), step * -(-(low + span) // step)


def scatter_chart(
    series: dict[str, dict[str, tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    goal: tuple[float, float] | None = None,
    title: str = "",
    width: int = 560,
    height: int = 340,
) -> Image.Image:
    """Labelled points, one colour per series, on axes from 0; ``goal`` shades where x
    and y both reach it.

    ``series`` maps a series (a model) to its labelled points (``{"128 px": (x, y)}``).
    Each axis ends a little past its largest value (or the goal's), so a point that
    meets a goal lands inside the shaded corner and one that misses lands outside; an
    axis with a negative value starts below it (a protection that did worse than noise).

    Example:
        >>> chart = scatter_chart({"v3": {"128 px": (0.44, 0.17)}}, x_label="fidelity",
        ...                       y_label="gap", goal=(0.5, 0.15))
        >>> chart.size
        (560, 340)
    """
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = 48, 40, width - 120, height - 36
    points = [point for labelled in series.values() for point in labelled.values()]
    x_step, x_min, x_max = _axis([x for x, _ in points] + ([goal[0]] if goal else []))
    y_step, y_min, y_max = _axis([y for _, y in points] + ([goal[1]] if goal else []))

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (right - left) * (x - x_min) / (x_max - x_min),
            bottom - (bottom - top) * (y - y_min) / (y_max - y_min),
        )

    if goal is not None:
        corner = at(*goal)
        draw.rectangle((corner[0], top, right, corner[1]), fill=_GOAL_SHADE)
        draw.text((right - 30, top + 4), "goal", fill=(40, 120, 40))
    draw.rectangle((left, top, right, bottom), outline="gray")
    for k in range(round((x_max - x_min) / x_step) + 1):
        value = x_min + k * x_step
        draw.text((at(value, 0)[0] - 10, bottom + 4), f"{value:.2g}", fill="black")
    for k in range(round((y_max - y_min) / y_step) + 1):
        value = y_min + k * y_step
        draw.text((6, at(0, value)[1] - 6), f"{value:.2g}", fill="black")
    draw.text((left, 6), title, fill="black")
    draw.text((left, 22), f"y: {y_label}", fill="black")
    draw.text(((left + right) // 2 - 3 * len(x_label), height - 16), x_label, fill="black")
    _legend(draw, list(series), right + 12, top)
    placed: list[tuple[float, float, float, float]] = []
    for k, labelled in enumerate(series.values()):
        colour = _BAR_COLOURS[k % len(_BAR_COLOURS)]
        for label, (x, y) in labelled.items():
            cx, cy = at(x, y)
            draw.ellipse((cx - 4, cy - 4, cx + 4, cy + 4), fill=colour)
            placed.append((cx - 4, cy - 4, cx + 4, cy + 4))
            box = _free_label_box(placed, cx + 7, cy - 6, 6 * len(label), 11)
            placed.append(box)
            draw.text(box[:2], label, fill=colour)
    return canvas


def _free_label_box(
    placed: list[tuple[float, float, float, float]], x: float, y: float, w: float, h: float
) -> tuple[float, float, float, float]:
    """The first of a few spots beside a point where a label overlaps nothing placed."""

    def clear(box: tuple[float, float, float, float]) -> bool:
        return all(
            box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed
        )

    for dy in (0, 12, -12, 24, -24):
        for dx in (0, -w - 14):
            box = (x + dx, y + dy, x + dx + w, y + dy + h)
            if clear(box):
                return box
    return (x, y, x + w, y + h)
