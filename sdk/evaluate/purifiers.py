"""Purifiers: what someone who wants to edit a protected photo runs on it first.

The field's main criticism of perturbation-based protection is that cheap
processing removes it (Sandoval-Segura et al. 2023 for JPEG; Hönig et al. 2024,
"Adversarial perturbations cannot reliably protect artists from generative AI",
for noisy upscaling, DiffPure and IMPRESS). Each purifier here maps uint8
``(H, W, 3)`` pixels to pixels of the same size, deterministically, and
:func:`photoimmune.sdk.evaluate.evaluate` edits its output like any other
processing step:

* :class:`GaussianNoise` (``gauss``): add Gaussian noise, sigma = 0.03;
* :class:`NoisyUpscale` (``upscale``): Hönig et al.'s noisy upscaling with the
  upscaler that runs here, model-free Lanczos: noise sigma = 0.05, down to half
  size, back up (their Stable Diffusion x4 upscaler is not available offline);
* :class:`DiffPure` (``diffpure``): SDEdit-style purification with the model
  itself: the photo's latent is noised to t* = 0.1 with the model's own
  scheduler and denoised by its UNet without a prompt, then decoded;
* :class:`Impress` (``impress``): IMPRESS's consistency purification, which
  optimises x' to stay close to the photo x while ``D(E(x')) ≈ x'``. IMPRESS
  measures closeness with LPIPS, whose weights would have to be downloaded;
  plain L2 (mean squared error) stands in for it here.

Example:
    >>> pixels = np.full((16, 16, 3), 128, np.uint8)
    >>> noisy = GaussianNoise()(pixels)
    >>> noisy.shape, noisy.dtype, bool((noisy != pixels).any())
    ((16, 16, 3), dtype('uint8'), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..io import pixels_to_tensor, tensor_to_pixels
from .processing import resize_round_trip


def _add_noise(pixels: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``pixels`` plus Gaussian noise of ``sigma`` (in [0, 1] pixel scale), rounded to 8 bits."""
    noise = np.random.default_rng(seed).normal(0.0, sigma * 255, pixels.shape)
    return np.clip(np.round(pixels + noise), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class GaussianNoise:
    """Gaussian noise of standard deviation ``sigma`` ([0, 1] pixel scale), drawn from ``seed``.

    Example:
        >>> GaussianNoise(sigma=0.0)(np.zeros((4, 4, 3), np.uint8)).max()
        np.uint8(0)
    """

    sigma: float = 0.03
    seed: int = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return _add_noise(pixels, self.sigma, self.seed)


@dataclass(frozen=True)
class NoisyUpscale:
    """Noisy upscaling (Hönig et al. 2024) with a model-free upscaler: Gaussian noise of
    ``sigma``, a Lanczos downscale by ``factor``, and a Lanczos upscale back to the
    photo's size. The downscale's low-pass filter removes most of the noise and of
    the perturbation's fine detail with it; the upscale restores the size editors expect.

    Example:
        >>> NoisyUpscale()(np.full((32, 48, 3), 90, np.uint8)).shape
        (32, 48, 3)
    """

    sigma: float = 0.05
    factor: float = 0.5
    seed: int = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        noisy = _add_noise(pixels, self.sigma, self.seed)
        return resize_round_trip(noisy, self.factor, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class DiffPure:
    """SDEdit-style purification with the model itself (DiffPure in latent space).

    The img2img pipeline ``pipe`` encodes the photo, noises its latent to
    ``t_star`` (a fraction of the scheduler's training steps, the img2img
    *strength*), denoises it with the model's UNet and scheduler over
    ``round(t_star * steps)`` steps with an empty prompt and no guidance, and
    decodes. The result is then edited like the photo would have been.

    Example:
        >>> purified = DiffPure(load_pipeline("tiny-ldm@2"))(pixels)  # doctest: +SKIP
    """

    pipe: Any  # a StableDiffusionImg2ImgPipeline
    t_star: float = 0.1
    steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if round(self.t_star * self.steps) < 1:  # diffusers would run an empty schedule
            raise InputError(
                f"DiffPure: t_star={self.t_star} of {self.steps} steps is no denoising step; "
                "raise steps or t_star"
            )

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        from ..models.pipelines import edit_image

        return edit_image(
            self.pipe,
            pixels,
            "",
            strength=self.t_star,
            guidance_scale=1.0,
            steps=self.steps,
            seed=self.seed,
        )


@dataclass(frozen=True)
class Impress:
    """IMPRESS consistency purification (Cao et al. 2023), with L2 in place of LPIPS.

    Minimises ``mean((x' - x)²) · closeness + mean((D(E(x')) - x')²)`` over x',
    starting at x, with Adam (``lr``, ``iterations``) through the VAE of ``vae``
    (E: the latent mean, D: the decoder); x' stays in [0, 1] and is rounded to 8
    bits at the end. An immunized photo is far from consistent (its latent is
    pushed elsewhere), so x' moves; a clean photo barely does.

    Example:
        >>> purified = Impress(load_pipeline("tiny-ldm@2").vae)(pixels)  # doctest: +SKIP
    """

    vae: Any  # a diffusers AutoencoderKL
    iterations: int = 20
    lr: float = 0.01
    closeness: float = 1.0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels_to_tensor(pixels).to(self.vae.device)
        purified = x.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([purified], lr=self.lr)
        # Gradients even when the caller runs under torch.no_grad(); the VAE's weights stay put.
        with torch.enable_grad():
            for _ in range(self.iterations):
                optimizer.zero_grad()
                signed = purified * 2 - 1
                latent = self.vae.encode(signed).latent_dist.mean
                decoded = (self.vae.decode(latent).sample + 1) / 2
                loss = self.closeness * (purified - x).pow(2).mean()
                loss = loss + (decoded - purified).pow(2).mean()
                loss.backward(inputs=[purified])
                optimizer.step()
                with torch.no_grad():
                    purified.clamp_(0, 1)
        return tensor_to_pixels(purified.detach().cpu())[0]
