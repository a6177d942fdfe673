"""The C2PA assertion ``org.photoimmune.immunization``: what an image is immunized against.

The assertion binds itself to pixels, not to file bytes: it carries the sha256
of the decoded 8-bit RGB pixels (row-major, ``height x width x 3``), so a
manifest counts only for the exact pixels that were protected. It also carries a
64-bit difference hash (a coarse, perceptual fingerprint) so that a verifier can
tell "this photo was modified after signing" (fingerprints close) from "this
manifest was copied from another photo" (fingerprints far apart).

Everything in it is an int or a string, so canonical JSON and CBOR encoders
never have to round-trip a float.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from .descriptor import SHA256_HEX
from .protection import Protection

ASSERTION_LABEL = "org.photoimmune.immunization"
#: Fingerprints at most this many bits apart are taken as the same picture.
SAME_PICTURE_BITS = 12


class ImmunizationAssertion(BaseModel):
    """The data of one ``org.photoimmune.immunization`` assertion.

    Example:
        >>> a = ImmunizationAssertion.for_pixels(np.zeros((4, 4, 3), np.uint8), [], "photoimmune 1")
        >>> a.width, a.covers("photoimmune/tiny-ldm@1")
        (4, False)
    """

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    pixels_sha256: str = Field(pattern=SHA256_HEX)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16}$", description="64-bit difference hash")
    protections: tuple[Protection, ...]
    software: str = Field(description="the photoimmune version that applied the protections")

    @classmethod
    def for_pixels(
        cls, pixels: np.ndarray, protections: list[Protection] | tuple[Protection, ...], software
    ) -> ImmunizationAssertion:
        return cls(
            pixels_sha256=pixel_sha256(pixels),
            width=int(pixels.shape[1]),
            height=int(pixels.shape[0]),
            fingerprint=pixel_fingerprint(pixels),
            protections=tuple(protections),
            software=software,
        )

    def covers(self, target_ref: str, target_digest: str | None = None) -> bool:
        """Whether one of the protections was made against ``target_ref``.

        With ``target_digest``, only a protection against that exact target counts
        (a release's target can be republished under the same ref).
        """
        return any(
            p.target_ref == target_ref and target_digest in (None, p.target_digest)
            for p in self.protections
        )

    def binds(self, pixels: np.ndarray) -> bool:
        """Whether these are exactly the pixels the assertion was made for."""
        return (int(pixels.shape[1]), int(pixels.shape[0])) == (
            self.width,
            self.height,
        ) and pixel_sha256(pixels) == self.pixels_sha256

    def same_picture(self, pixels: np.ndarray) -> bool:
        """Whether ``pixels`` look like the signed picture (perhaps modified since)."""
        distance = fingerprint_distance(self.fingerprint, pixel_fingerprint(pixels))
        return distance <= SAME_PICTURE_BITS


def pixel_sha256(pixels: np.ndarray) -> str:
    """sha256 of 8-bit RGB pixels in row-major ``(height, width, 3)`` order.

    Example:
        >>> pixel_sha256(np.zeros((1, 1, 3), np.uint8))[:12]
        '709e80c88487'
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        shape = f"{pixels.dtype} {pixels.shape}"
        raise ValueError(f"expected uint8 (height, width, 3) pixels, not {shape}")
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def pixel_fingerprint(pixels: np.ndarray) -> str:
    """A 64-bit difference hash: brightness gradients of a 9x8 gray thumbnail.

    Robust to small perturbations (such as immunization itself) and re-encoding,
    different for different photos.

    Example:
        >>> len(pixel_fingerprint(np.zeros((32, 32, 3), np.uint8)))
        16
    """
    gray = Image.fromarray(pixels).convert("L").resize((9, 8), Image.Resampling.BOX)
    values = np.asarray(gray, dtype=np.int16)
    bits = (values[:, 1:] > values[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def fingerprint_distance(a: str, b: str) -> int:
    """Hamming distance between two fingerprints (0: same, about 32: unrelated).

    Example:
        >>> fingerprint_distance("00000000000000ff", "0000000000000000")
        8
    """
    return (int(a, 16) ^ int(b, 16)).bit_count()
