"""Soft bindings: a perceptual code that finds a signed image's manifest after it was stripped.

A re-save by a platform (strip metadata, JPEG, resize, crop) removes the C2PA
manifest; the pixels still look the same. Every signed immunized image therefore
carries a ``c2pa.soft-binding`` assertion with the **ISCC image code**
(ISO 24138, algorithm ``io.iscc.v0`` on the C2PA soft-binding algorithm list,
computed by the maintained ``iscc-core`` library): a 64-bit DCT hash of a 32x32
grey thumbnail. A resolver (:mod:`photoimmune.resolver`) keeps manifests by code
and returns the one whose code is within :data:`MATCH_BITS` bits of a query's.

One ISCC code of the whole picture survives JPEG and resizing but not a 10 %
crop: the thumbnail's content shifts and the low DCT frequencies change. So
the assertion holds :data:`REGIONS`: the whole picture plus crops keeping 90 %
of each side at a 3x3 grid of offsets (and 95 % crops likewise); a copy cut
anywhere in that range lands near one of them. The query side computes one code,
of the copy as it is. ``bench/softbinding.py`` measures the choice
(docs/manifests.md, "Soft bindings").

Only codes leave a verifier: the image is never sent to a resolver.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

#: The C2PA soft-binding algorithm list's name for the ISCC image code (ISO 24138).
ALGORITHM = "io.iscc.v0"
SOFT_BINDING_LABEL = "c2pa.soft-binding"
CODE_BITS = 64
#: Codes at most this many bits apart are taken as the same picture (chosen from
#: bench/softbinding.py: recovered copies and unrelated photos, docs/manifests.md).
MATCH_BITS = 12


class Region(BaseModel):
    """A crop of the picture, in percent of its width and height (C2PA region units)."""

    model_config = ConfigDict(frozen=True)

    x: float = Field(ge=0, le=100)
    y: float = Field(ge=0, le=100)
    width: float = Field(gt=0, le=100)
    height: float = Field(gt=0, le=100)

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        """These percent coordinates cut out of ``pixels`` (at least one pixel)."""
        h, w = pixels.shape[:2]
        left, top = round(w * self.x / 100), round(h * self.y / 100)
        right = max(left + 1, round(w * (self.x + self.width) / 100))
        bottom = max(top + 1, round(h * (self.y + self.height) / 100))
        return pixels[top:bottom, left:right]


def _grid(keep: float) -> list[Region]:
    offsets = (0.0, (100 - keep) / 2, 100 - keep)
    return [Region(x=x, y=y, width=keep, height=keep) for y in offsets for x in offsets]


#: The regions a signed image's codes are computed over: whole, then 95 % and 90 % crops.
REGIONS: tuple[Region, ...] = (Region(x=0, y=0, width=100, height=100), *_grid(95), *_grid(90))


class BoundCode(BaseModel):
    """One code of a soft binding and the region of the signed picture it was computed on."""

    model_config = ConfigDict(frozen=True)

    code: int = Field(ge=0, lt=2**CODE_BITS)
    region: Region


def image_code(pixels: np.ndarray) -> int:
    """The 64-bit ISCC image code of uint8 RGB (or grey) pixels, as an int.

    Normalised as ISCC prescribes: grey, 32x32 bicubic thumbnail.

    Example:
        >>> image_code(np.zeros((8, 8, 3), np.uint8)) < 2**64
        True
    """
    from iscc_core.code_content_image import soft_hash_image_v0

    grey = Image.fromarray(np.ascontiguousarray(pixels)).convert("L")
    thumb = grey.resize((32, 32), Image.Resampling.BICUBIC)
    digest = soft_hash_image_v0(list(thumb.tobytes()), bits=CODE_BITS)
    return int.from_bytes(digest, "big")


def binding_codes(pixels: np.ndarray) -> tuple[BoundCode, ...]:
    """The codes a signed image is found by: one per :data:`REGIONS` entry.

    Example:
        >>> len(binding_codes(np.zeros((40, 40, 3), np.uint8))) == len(REGIONS)
        True
    """
    return tuple(BoundCode(code=image_code(r.crop(pixels)), region=r) for r in REGIONS)


def soft_binding_assertion(codes: Iterable[BoundCode]) -> dict:
    """The ``c2pa.soft-binding`` assertion's data for ``codes`` (C2PA 2.1 schema).

    Each block holds one code, base64 of its 8 big-endian bytes, scoped to its region.

    Example:
        >>> data = soft_binding_assertion(binding_codes(np.zeros((8, 8, 3), np.uint8)))
        >>> data["alg"], len(data["blocks"]) == len(REGIONS)
        ('io.iscc.v0', True)
    """
    blocks = [
        {"scope": {"region": _region_of_interest(c.region)}, "value": _b64(c.code)} for c in codes
    ]
    # ``pad`` is required by the schema (zero bytes that let a signer patch the assertion).
    return {"alg": ALGORITHM, "name": "ISCC image code (ISO 24138)", "blocks": blocks, "pad": [0]}


def _region_of_interest(region: Region) -> dict:
    """C2PA's region-of-interest map for a rectangle in percent."""
    shape = {
        "type": "rectangle",
        "unit": "percent",
        "origin": {"x": region.x, "y": region.y},
        "width": region.width,
        "height": region.height,
    }
    return {"region": [{"type": "spatial", "shape": shape}]}


def _b64(code: int) -> str:
    return base64.b64encode(code.to_bytes(8, "big")).decode()


def codes_of_assertion(data: dict) -> tuple[BoundCode, ...]:
    """The codes of a ``c2pa.soft-binding`` assertion written by :func:`soft_binding_assertion`.

    Another algorithm's assertion, or a malformed one, has none of ours: ``()``.

    Example:
        >>> codes = binding_codes(np.zeros((8, 8, 3), np.uint8))
        >>> codes_of_assertion(soft_binding_assertion(codes)) == codes
        True
    """
    if not isinstance(data, dict) or data.get("alg") != ALGORITHM:
        return ()
    found = []
    for block in data.get("blocks") or []:
        try:
            raw = base64.b64decode(block["value"], validate=True)
            shape = block["scope"]["region"]["region"][0]["shape"]
            region = Region(
                x=shape["origin"]["x"],
                y=shape["origin"]["y"],
                width=shape["width"],
                height=shape["height"],
            )
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if len(raw) == 8:
            found.append(BoundCode(code=int.from_bytes(raw, "big"), region=region))
    return tuple(found)
