"""Protection marks: a keyed pattern inside the perturbation that later releases recognise.

A cooperative release (:mod:`photoimmune.sdk.models.honour`) must tell photos
protected against an earlier target from clean ones. The perturbation an attack
makes cannot be told apart reliably: it is ±8/255 of fine detail, and photos have
their own (docs/models.md, "Cooperative releases"). So, as GuardDoor (Wang et al.,
ICML 2025) has the provider add a trigger, a target may name a *mark*
(:class:`~photoimmune.sdk.descriptor.MarkSpec`): a ±1 pattern of ``cell`` x
``cell`` squares drawn from a public seed at the image's own size, of which
``immunize`` adds ``amplitude`` (2/255; 1/255 on photos twice the mark's ``side``
or more) to every protection, clamped into the same ε ball, so the budget does not
grow.

It is found by correlation (:func:`mark_score`): the picture's fine residual
against the pattern's, as a z-score that is about N(0, 1) on pictures that do not
carry it and mostly 10-100 on protected ones, JPEG 75 copies included (128 px;
larger pictures score more, and the hardest, fine textures at 128 px after JPEG,
about 2). What a mark does not survive: resizing or cropping, which
move the pattern off its grid.

Example:
    >>> x = torch.full((1, 3, 64, 64), 0.5)
    >>> marked = apply_marks(x, x, [MarkSpec(seed=3)], 8 / 255)
    >>> bool(mark_score(marked, MarkSpec(seed=3)) > 10)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from .descriptor import MarkSpec

#: A score from which a picture counts as carrying the mark (manifest-free detection):
#: above every clean picture measured (4.6 the highest of 1,536, docs/models.md).
FOUND = 6.0
#: Floor of the residual's local amplitude: one 8-bit level.
_FLOOR = 1 / 255
#: Window (pixels) of the residual's local energy.
_ENERGY_WINDOW = 9


def mark_pattern(spec: MarkSpec, height: int, width: int) -> torch.Tensor:
    """The mark's ±1 pattern at ``height`` x ``width``, as a ``(1, 1, h, w)`` tensor.

    Drawn with NumPy's PCG64 from ``spec.seed``, the same on every platform.

    Example:
        >>> mark_pattern(MarkSpec(seed=3, cell=2), 4, 4).unique().tolist()
        [-1.0, 1.0]
    """
    return torch.from_numpy(_grid(spec.seed, spec.cell, height, width))[None, None]


@functools.lru_cache(maxsize=32)
def _grid(seed: int, cell: int, height: int, width: int) -> np.ndarray:
    # Cached: a cooperative release's encoder reads the mark on every encode, and an
    # attack against it on every step, at the same few sizes. Never written to.
    rows, cols = -(-height // cell), -(-width // cell)
    cells = np.random.default_rng(seed).choice([-1.0, 1.0], size=(rows, cols))
    return np.kron(cells, np.ones((cell, cell)))[:height, :width].astype(np.float32)


def _box(x: torch.Tensor, size: int) -> torch.Tensor:
    pad = size // 2
    return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), size, stride=1)


def _high_pass(x: torch.Tensor, cell: int) -> torch.Tensor:
    # A box twice the cell wide removes what varies slower than the pattern: most of
    # a photo's content, little of the mark.
    return x - _box(x, 2 * cell + 1)


def mark_score(x01: torch.Tensor, spec: MarkSpec) -> torch.Tensor:
    """How strongly each picture of ``x01`` (``(b, 3, h, w)`` in [0, 1]) carries the mark.

    A z-score, about N(0, 1) without the mark and far above 5 with it: the matched
    filter of the pattern in the picture's fine residual, each pixel weighted by the
    inverse of its neighbourhood's residual energy, so that textures (and the
    perturbation itself) weigh less than smooth regions where the mark stands out.
    Differentiable, so attacks see it where a release's encoder uses it.

    Example:
        >>> mark_score(torch.rand(2, 3, 64, 64), MarkSpec(seed=3)).shape
        torch.Size([2])
    """
    height, width = x01.shape[-2:]
    residual = _high_pass(x01.float().mean(dim=1, keepdim=True), spec.cell)
    energy = _box(residual.square(), _ENERGY_WINDOW) + _FLOOR**2
    key = _high_pass(mark_pattern(spec, height, width).to(residual.device), spec.cell)
    matched = (residual * key / energy).sum(dim=(1, 2, 3))
    return matched / (key.square() / energy).sum(dim=(1, 2, 3)).sqrt()


def carries_mark(x01: torch.Tensor, spec: MarkSpec) -> list[bool]:
    """Whether each picture of ``x01`` (``(b, 3, h, w)`` in [0, 1]) carries the mark: its
    :func:`mark_score` reaches :data:`FOUND` (manifest-free detection).

    Example:
        >>> carries_mark(torch.rand(1, 3, 64, 64), MarkSpec(seed=3))
        [False]
    """
    with torch.no_grad():
        return (mark_score(x01, spec) >= FOUND).tolist()


def apply_marks(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    marks: Sequence[MarkSpec],
    eps: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x_adv`` with each mark's amplitude added to its perturbation, kept within ``eps``.

    ``x`` and ``x_adv`` are ``(b, 3, h, w)`` in [0, 1] on 8-bit levels; so is the
    result (amplitudes are whole levels). ``mask`` (1 where the attack may act)
    keeps the mark out of what must stay untouched.

    Example:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> bool((apply_marks(x, x + 8 / 255, [MarkSpec(seed=1)], 8 / 255) - x).abs().max()
        ...      <= 8 / 255 + 1e-6)
        True
    """
    if not marks:
        return x_adv
    height, width = x.shape[-2:]
    added = sum(
        spec.levels_at(height, width) / 255 * mark_pattern(spec, height, width).to(x)
        for spec in marks
    )
    if mask is not None:
        added = added * mask
    delta = (x_adv - x + added).clamp(-eps, eps)
    return ((x + delta).clamp(0, 1) * 255).round() / 255


__all__ = ["FOUND", "apply_marks", "carries_mark", "mark_pattern", "mark_score"]
