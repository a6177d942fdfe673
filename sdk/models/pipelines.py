"""Build diffusers pipelines from a bundled model name or a local folder.

Everything goes through ``from_pretrained(local_path)``, the same call that
loads a real Stable Diffusion checkpoint; ``local_files_only=True`` guarantees
no request ever leaves the machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from PIL import Image

from ..descriptor import PipelineKind
from ..errors import UnknownModelError
from ..limits import check_edit_steps
from .bundled import resolve_model

# Imported here so that diffusers finds it: a cooperative release's model_index.json
# names this module's class, and diffusers loads classes from outside its own
# libraries only if their module is already imported.
from .honouring_vae import HonouringAutoencoderKL

_CLASSES = {"img2img": StableDiffusionImg2ImgPipeline, "inpaint": StableDiffusionInpaintPipeline}


def load_pipeline(
    model: str | os.PathLike[str],
    kind: PipelineKind = "img2img",
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress_bar: bool = False,
) -> StableDiffusionImg2ImgPipeline | StableDiffusionInpaintPipeline:
    """Load an img2img or inpainting pipeline for ``model``.

    Example:
        >>> pipe = load_pipeline("tiny-ldm@1")  # doctest: +SKIP
        >>> edit = pipe("a painting", image=photo, strength=0.3).images[0]  # doctest: +SKIP
    """
    if kind not in _CLASSES:
        raise UnknownModelError(f"unknown pipeline kind {kind!r}; use 'img2img' or 'inpaint'")
    path: Path = resolve_model(model)
    pipe = _CLASSES[kind].from_pretrained(
        path,
        safety_checker=None,
        requires_safety_checker=False,
        feature_extractor=None,
        local_files_only=True,
        dtype=dtype,  # loaded in it: a cast afterwards makes diffusers warn
    )
    pipe.set_progress_bar_config(disable=not progress_bar)
    return pipe.to(device=device)


def load_vae(model: str | os.PathLike[str], **kwargs: Any) -> AutoencoderKL:
    """The VAE of a bundled name or diffusers folder, in the class its config names.

    A cooperative release's VAE (:class:`.HonouringAutoencoderKL`) loaded as a plain
    ``AutoencoderKL`` would silently drop its recogniser.

    Example:
        >>> type(load_vae("tiny-ldm@3")).__name__  # doctest: +SKIP
        'AutoencoderKL'
    """
    folder = resolve_model(model) / "vae"
    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    cls = HonouringAutoencoderKL if name == HonouringAutoencoderKL.__name__ else AutoencoderKL
    return cls.from_pretrained(folder, local_files_only=True, **kwargs)


@torch.no_grad()
def edit_image(
    pipe: StableDiffusionImg2ImgPipeline | StableDiffusionInpaintPipeline,
    pixels: np.ndarray | str | os.PathLike[str] | bytes,
    prompt: str,
    *,
    strength: float = 0.5,
    guidance_scale: float = 7.5,
    steps: int = 20,
    seed: int = 0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Run one edit with a fixed seed and return uint8 pixels of the same size.

    ``mask`` (inpainting pipelines only) is nonzero where the edit repaints.
    ``pixels`` may also be a file's path or bytes, so that a pipeline with the
    immunization check enabled sees the file (and its manifest), not bare pixels.

    Example:
        >>> pipe = load_pipeline("tiny-ldm@1")  # doctest: +SKIP
        >>> edited = edit_image(pipe, pixels, "a cat in snow")  # doctest: +SKIP
    """
    kwargs: dict[str, Any] = (
        {} if mask is None else {"mask_image": Image.fromarray((mask != 0).astype(np.uint8) * 255)}
    )
    if mask is None or isinstance(pipe, StableDiffusionImg2ImgPipeline):
        check_edit_steps(strength, steps)
        kwargs["strength"] = strength
    out = pipe(
        prompt,
        image=Image.fromarray(np.ascontiguousarray(pixels))
        if isinstance(pixels, np.ndarray)
        else pixels,
        guidance_scale=guidance_scale,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    ).images[0]
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
