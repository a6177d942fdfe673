"""Differentiable random transforms for EOT (expectation over transformation).

A perturbation that only works on the exact pixels is fragile: a re-save as
JPEG, a resize or a blur can wash it out, and so can the purifiers of
:mod:`photoimmune.sdk.evaluate.purifiers`. With EOT the attack averages its
gradient over random draws of such transforms, so the δ it finds survives them.
Every transform maps an ``(N, 3, H, W)`` tensor in [0, 1] to the same shape and
is differentiable (JPEG's rounding uses a straight-through estimator).

What covers which purifier: :class:`JpegApprox` JPEG, :class:`RandomResize`
resizing, :class:`RandomBlur` blur, :class:`RandomNoise` Gaussian noise and
:class:`NoisyUpscale` noisy upscaling (bicubic here, Lanczos in the purifier:
close, and bicubic is differentiable in torch). DiffPure and IMPRESS run the
model's denoiser or an optimisation of their own; differentiating through them
at every PGD step would cost more than the attack, so EOT does not cover them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Protocol

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)


class Transform(Protocol):
    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor: ...


def uniform(gen: torch.Generator, low: float, high: float) -> float:
    """One draw from ``[low, high)`` out of ``gen`` (one ``torch.rand`` call, so seeded
    draws repeat exactly).

    Example:
        >>> 2.0 <= uniform(torch.Generator().manual_seed(0), 2.0, 3.0) < 3.0
        True
    """
    return low + (high - low) * float(torch.rand((), generator=gen))


class RandomResize:
    """Downscale by a random factor in ``[min_scale, 1]`` and back (bilinear)."""

    def __init__(self, min_scale: float = 0.5) -> None:
        self.min_scale = min_scale

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = uniform(gen, self.min_scale, 1.0)
        small = F.interpolate(
            x, size=(max(8, round(h * s)), max(8, round(w * s))), mode="bilinear", antialias=True
        )
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


class RandomBlur:
    """Gaussian blur with a random sigma in ``[0, max_sigma]`` pixels."""

    def __init__(self, max_sigma: float = 1.0) -> None:
        self.max_sigma = max_sigma

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        sigma = uniform(gen, 0.05, self.max_sigma)
        radius = max(1, math.ceil(2 * sigma))
        taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-(taps**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        c = x.shape[1]
        padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
        out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class RandomNoise:
    """Gaussian noise with a random standard deviation in ``[0, max_sigma]``."""

    def __init__(self, max_sigma: float = 0.03) -> None:
        self.max_sigma = max_sigma

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        sigma = uniform(gen, 0.0, self.max_sigma)
        return x + sigma * torch.randn(x.shape, generator=gen).to(x)


class NoisyUpscale:
    """Noisy upscaling: Gaussian noise (standard deviation up to ``sigma``), down by
    ``factor``, back up (bicubic)."""

    def __init__(self, sigma: float = 0.05, factor: float = 0.5) -> None:
        self.noise = RandomNoise(sigma)
        self.factor = factor

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        small = (max(8, round(h * self.factor)), max(8, round(w * self.factor)))
        down = F.interpolate(self.noise(x, gen), size=small, mode="bicubic", antialias=True)
        return F.interpolate(down, size=(h, w), mode="bicubic", align_corners=False)


# The JPEG standard's luminance and chrominance quantisation tables (Annex K).
_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
_CHROMA = [17, 18, 24, 47, *[99] * 4, 18, 21, 26, 66, *[99] * 4, 24, 26, 56, *[99] * 5, 47, 66]
_CHROMA += [99] * (64 - len(_CHROMA))


@cache
def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.float()


def _quality_scale(quality: float) -> float:
    return (5000 / quality if quality < 50 else 200 - 2 * quality) / 100


class JpegApprox:
    """Differentiable JPEG: YCbCr, 8x8 DCT, quantisation at a random quality, back.

    Rounding passes gradients straight through; chroma is not subsampled (a
    simplification that keeps the transform shape-preserving).
    """

    def __init__(self, qualities: tuple[int, int] = (50, 95)) -> None:
        self.qualities = qualities

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        q = uniform(gen, *self.qualities)
        n, _, h, w = x.shape
        ph, pw = (-h) % 8, (-w) % 8
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        ycc = (
            torch.stack(
                [
                    0.299 * r + 0.587 * g + 0.114 * b,
                    -0.168736 * r - 0.331264 * g + 0.5 * b + 0.5,
                    0.5 * r - 0.418688 * g - 0.081312 * b + 0.5,
                ],
                dim=1,
            )
            * 255
            - 128
        )
        hh, ww = ycc.shape[-2:]
        blocks = ycc.reshape(n, 3, hh // 8, 8, ww // 8, 8).transpose(3, 4)
        d = _dct_matrix().to(x)
        coeffs = d @ blocks @ d.T
        scale = _quality_scale(q)
        tables = torch.tensor([_LUMA, _CHROMA, _CHROMA], dtype=x.dtype, device=x.device)
        qt = (tables * scale).clamp(min=1).view(1, 3, 1, 1, 8, 8)
        scaled = coeffs / qt
        rounded = scaled + (torch.round(scaled) - scaled).detach()  # straight-through
        pixels = d.T @ (rounded * qt) @ d
        ycc = pixels.transpose(3, 4).reshape(n, 3, hh, ww)
        y, cb, cr = ((ycc + 128) / 255).unbind(1)
        cb, cr = cb - 0.5, cr - 0.5
        rgb = torch.stack(
            [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1
        )
        return rgb[..., :h, :w]


class RandomChoice:
    """Apply one of ``transforms`` (or nothing, with probability ``p_identity``)."""

    def __init__(self, transforms: Sequence[Transform], p_identity: float = 0.25) -> None:
        self.transforms = list(transforms)
        self.p_identity = p_identity

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if float(torch.rand((), generator=gen)) < self.p_identity:
            return x
        k = int(torch.randint(len(self.transforms), (1,), generator=gen))
        return self.transforms[k](x, gen)


def default_eot() -> RandomChoice:
    """JPEG (quality 50-95), resize (down to 50%), blur (sigma up to 1), Gaussian noise
    (sigma up to 0.03) or noisy upscaling (noise up to 0.05, half size and back), or nothing.

    Example:
        >>> x = torch.full((1, 3, 16, 16), 0.5)
        >>> default_eot()(x, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 16, 16])
    """
    return RandomChoice([JpegApprox(), RandomResize(), RandomBlur(), RandomNoise(), NoisyUpscale()])
