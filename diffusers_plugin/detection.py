"""Manifest-free detection: does an image carry an encoder-attack perturbation?

A re-save strips the C2PA manifest but not the perturbation. An immunized
image's latent sits closer to the target's latent than the photo's own would,
but clean photos vary so much in that distance (a gray wall sits close to a
gray target) that the distance alone says little. What sets an immunized image
apart is that its perturbation is tuned to the exact pixel grid the encoder
sees: the encoder downsamples with strided convolutions, and the attack
exploits their phase. Shifting the image by one and a half latent cells undoes
much of the perturbation's pull, while a clean photo's distance to the target
barely moves under the same shift. The score compares the two::

    score = ‖E(x) - z_target‖² / mean over shifts s of ‖E(shift_s(x)) - z_target‖²

taken at the model's working resolution, with shifts of 1.5 times the VAE's
downsampling factor left, up, and both. It is about 1 for clean photos and
lower for immunized ones; at or below ``threshold`` an image is ``detected``.
A target that names a protection mark (:mod:`photoimmune.sdk.mark`) is far
easier: an image whose mark score reaches :data:`~photoimmune.sdk.mark.FOUND`
carries a protection against it, and scores 0.
How often that is right is measured by ``bench/detection.py`` (true and false
positive rates; see docs/plugin-guide.md): on a model as small as the bundled
one, whose encoder an 8/255 attack moves only a little, many immunized images
leave too faint a trace to be told apart from clean ones.
"""

from __future__ import annotations

import numpy as np
import torch

from photoimmune.sdk.attacks.sizing import fill_like, to_working, working_size
from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.mark import carries_mark
from photoimmune.sdk.targets import AttackTarget

#: Scores at or below this are taken as immunized (chosen on clean photos for a low false
#: positive rate; see bench/detection.py).
DEFAULT_THRESHOLD = 0.94


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved up by ``dy`` and left by ``dx`` pixels, edges repeated to keep its size."""
    height, width = x.shape[-2:]
    cropped = x[..., dy:, dx:]
    return torch.nn.functional.pad(cropped, (0, dx, 0, dy), mode="replicate")[..., :height, :width]


class LatentDetector:
    """Scores images for the trace of an encoder attack against ``target``.

    Example:
        >>> detector = LatentDetector(client.get("photoimmune/tiny-ldm@2"))  # doctest: +SKIP
        >>> detector.score(stripped_pixels) <= detector.threshold  # doctest: +SKIP
        True
    """

    def __init__(self, target: AttackTarget, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.target = target
        self.encoder = target.vae_encoder()
        self.threshold = threshold
        self._x_target = target.tensor(target.encoder.x_target)
        cell = 2 ** (len(self.encoder.encoder.down_blocks) - 1)  # pixels per latent cell
        self.shift = cell + cell // 2  # off the stride phase, and off the content

    @torch.no_grad()
    def scores(self, pixels: list[np.ndarray]) -> list[float]:
        """Scores of same-sized uint8 images (lower: more likely immunized)."""
        x = self._working(pixels)
        s = self.shift
        views = [x, shifted(x, 0, s), shifted(x, s, 0), shifted(x, s, s)]
        own, *moved = self._distances(torch.cat(views)).chunk(len(views))
        ratios = own / torch.stack(moved).mean(0).clamp_min(1e-12)
        if self.target.mark is not None:  # read at the image's own size, where it was made
            marked = torch.tensor(carries_mark(pixels_to_tensor(pixels), self.target.mark))
            ratios = torch.where(marked.to(x.device), torch.zeros_like(ratios), ratios)
        return ratios.tolist()

    @torch.no_grad()
    def distances(self, pixels: list[np.ndarray]) -> list[float]:
        """Mean squared distances of same-sized uint8 images' latents to the target's.

        Example:
            >>> LatentDetector(target).distances([pixels])  # doctest: +SKIP
            [0.61]
        """
        return self._distances(self._working(pixels)).tolist()

    def _working(self, pixels: list[np.ndarray]) -> torch.Tensor:
        x = pixels_to_tensor(pixels, device=next(self.encoder.parameters()).device)
        height, width = x.shape[-2:]
        return to_working(x, working_size(height, width, self.target.resolution))

    def _distances(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        z_target = self.encoder(fill_like(self._x_target.to(x.device), (height, width)))
        return (self.encoder(x) - z_target).pow(2).flatten(1).mean(1)

    def score(self, pixels: np.ndarray) -> float:
        """The score of one uint8 ``(H, W, 3)`` image."""
        return self.scores([pixels])[0]
