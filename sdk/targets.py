"""``AttackTarget``: what immunization must attack for one model version.

A target names the model release (:class:`ModelRef`), where its weights are
(a local diffusers folder), the resolution editors use it at, and the *target
recipe*: the image whose latent (encoder attack) or appearance (diffusion
attack) the perturbation pushes an edit towards.

Recipes:

* ``"gray"``: flat mid-gray, PhotoGuard's choice;
* ``"checker"``: a high-contrast black-and-white checkerboard of 8-pixel cells,
  in the spirit of Mist's textured target: edits inherit a visible pattern.

The digest fingerprints the target (ref, recipe and the target latent's
bytes), so a Protection says exactly what it was computed against.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from .refs import ModelRef

Recipe = Literal["gray", "checker"]
RECIPES: tuple[Recipe, ...] = ("gray", "checker")


def target_image(recipe: Recipe, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The recipe's image in [0, 1], ``(1, 3, h, w)`` (one tile when ``size`` is None).

    Example:
        >>> target_image("checker").shape
        torch.Size([1, 3, 16, 16])
    """
    if recipe == "gray":
        tile = torch.full((1, 3, 1, 1), 0.5)
    elif recipe == "checker":
        cells = (torch.arange(16)[:, None] // 8 + torch.arange(16)[None, :] // 8) % 2
        tile = cells.float().expand(1, 3, 16, 16).clone()
    else:
        from .errors import InputError

        raise InputError(f"unknown target recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if size is None:
        return tile
    from .attacks.sizing import fill_like

    return fill_like(tile, size)


class AttackTarget(BaseModel):
    """One model version's attack target.

    Example:
        >>> target = build_target("tiny-ldm@1")  # doctest: +SKIP
        >>> str(target.ref), target.recipe  # doctest: +SKIP
        ('photoimmune/tiny-ldm@1', 'gray')
    """

    model_config = ConfigDict(frozen=True)

    ref: ModelRef
    model_path: str
    resolution: int
    recipe: Recipe = "gray"
    digest: str


@lru_cache(maxsize=4)
def load_encoder(model_path: str):  # -> VAEEncoder; cached: loading costs more than a few steps
    from .attacks.encoder import VAEEncoder

    return VAEEncoder.from_pretrained(model_path)


def _default_ref(path: Path) -> ModelRef:
    from .models.bundled import bundled_models

    for entry in bundled_models():
        if entry.path == path:
            return ModelRef.parse(entry.ref)
    name = re.sub(r"[^a-z0-9._-]+", "-", path.name.lower()).strip("-._") or "model"
    return ModelRef(vendor="local", model=name, version="0")


def build_target(
    model: str | os.PathLike[str],
    *,
    ref: ModelRef | str | None = None,
    recipe: Recipe = "gray",
) -> AttackTarget:
    """Build the attack target for a bundled model or a local diffusers folder.

    Example:
        >>> build_target("tiny-ldm@2", recipe="checker").resolution  # doctest: +SKIP
        128
    """
    from .models.bundled import resolve_model

    path = resolve_model(model).resolve()
    encoder = load_encoder(str(path))
    size = (encoder.resolution, encoder.resolution)
    with torch.no_grad():
        z = encoder(target_image(recipe, size)).contiguous()
    ref = ModelRef.parse(ref) if isinstance(ref, str) else (ref or _default_ref(path))
    digest = hashlib.sha256(f"{ref}|{recipe}|{tuple(z.shape)}|".encode() + z.numpy().tobytes())
    return AttackTarget(
        ref=ref,
        model_path=str(path),
        resolution=encoder.resolution,
        recipe=recipe,
        digest=digest.hexdigest(),
    )
