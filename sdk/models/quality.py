"""Quality checks for a latent diffusion model: is it good enough to stand in for SD?

Two numbers, both on the held-out validation photos at the model's resolution:
VAE reconstruction PSNR, and how close an img2img edit at low strength stays to
its input (a model that scrambles photos at strength 0.3 is not a useful stand-in).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..evaluate.metrics import pair_metrics
from ..io import pixels_to_tensor, tensor_to_pixels
from ..samples import sample_pixels
from .pipelines import edit_image, load_pipeline
from .train_tiny import VALIDATION_PHOTOS


@dataclass(frozen=True)
class QualityReport:
    """What :func:`check_model` measured, per validation photo."""

    model: str
    resolution: int
    vae_psnr_db: dict[str, float]
    img2img_psnr_db: dict[str, float]
    load_seconds: float
    img2img_seconds: float


@torch.no_grad()
def check_model(
    model: str | os.PathLike[str],
    *,
    resolution: int = 128,
    strength: float = 0.3,
    guidance_scale: float = 7.5,
    steps: int = 10,
    prompt: str = "a photo",
    seed: int = 0,
    photos: tuple[str, ...] = VALIDATION_PHOTOS,
) -> QualityReport:
    """Measure VAE reconstruction and low-strength img2img fidelity on validation photos.

    Example:
        >>> check_model("tiny-ldm@1").vae_psnr_db  # doctest: +SKIP
        {'chelsea.png': 25.1, 'coffee.png': 24.3}
    """
    started = time.perf_counter()
    pipe = load_pipeline(model)
    load_seconds = time.perf_counter() - started
    vae_scores, edit_scores, edit_seconds = {}, {}, []
    for name in photos:
        pixels = sample_pixels(name, resolution)
        x = pixels_to_tensor(pixels, value_range="signed")
        recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
        recon_pixels = tensor_to_pixels(recon, value_range="signed")[0]
        vae_scores[name] = round(pair_metrics(pixels, recon_pixels, ("psnr",))["psnr"], 2)
        tick = time.perf_counter()
        edit_pixels = edit_image(
            pipe,
            pixels,
            prompt,
            strength=strength,
            guidance_scale=guidance_scale,
            steps=steps,
            seed=seed,
        )
        edit_seconds.append(time.perf_counter() - tick)
        edit_scores[name] = round(pair_metrics(pixels, edit_pixels, ("psnr",))["psnr"], 2)
    return QualityReport(
        model=os.fspath(model),
        resolution=resolution,
        vae_psnr_db=vae_scores,
        img2img_psnr_db=edit_scores,
        load_seconds=round(load_seconds, 3),
        img2img_seconds=round(float(np.median(edit_seconds)), 3),
    )
