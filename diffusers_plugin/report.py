"""What the immunization check found and did for one pipeline call.

``pipe.immunization_report`` holds an :class:`ImmunizationReport` after every
call; it is a pydantic model, so ``report.model_dump_json()`` logs or ships it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from photoimmune.sdk.protection import Protection

Policy = Literal["reimmunize", "refuse", "warn", "allow"]
POLICIES: tuple[Policy, ...] = ("reimmunize", "refuse", "warn", "allow")

#: What an input image is, as far as this model version is concerned.
#:
#: ``covered``     a trusted manifest bound to these pixels covers this model version
#: ``outdated``    a trusted manifest bound to these pixels covers other versions only
#: ``unverified``  a manifest claims immunization but does not hold up here (untrusted
#:                 signer, altered, modified pixels, copied from another picture...)
#: ``detected``    no usable manifest, but the pixels carry an immunization's signature
#:                 (see :mod:`photoimmune.diffusers_plugin.detection`)
#: ``clean``       no claim and no sign of immunization
Status = Literal["covered", "outdated", "unverified", "detected", "clean"]
#: Statuses the policy acts on: the image is (or claims to be) immunized, not for this version.
PROTECTED_ELSEWHERE: tuple[Status, ...] = ("outdated", "unverified", "detected")

#: ``passed``: edited as given; ``reimmunized``: edited after immunizing it against
#: this version; ``refused``: the call raised; ``warned``/``allowed``: edited as given
#: although the policy would have acted.
Action = Literal["passed", "reimmunized", "refused", "warned", "allowed"]


class ImageCheck(BaseModel):
    """One edited image: what was found and what was done."""

    model_config = ConfigDict(frozen=True)

    argument: str = Field(description="the call argument the image came in, e.g. 'image'")
    index: int = Field(description="position in that argument's list (0 for a single image)")
    source: str = Field(description="file name, or '<PIL image>', '<tensor>'...")
    status: Status
    action: Action
    verdict: str = Field(
        description="the manifest's verdict (see read_manifest); 'missing' when the file has "
        "none, 'unavailable' when no file bytes came with the image (a bare PIL image, array "
        "or tensor: pass the path or bytes to have its manifest read)"
    )
    signer: str | None = None
    protected_against: tuple[str, ...] = Field(
        default=(), description="target refs along the manifest chain, oldest first"
    )
    detection_score: float | None = Field(
        default=None, description="manifest-free detection score (lower: more likely immunized)"
    )
    detected_against: str | None = Field(
        default=None,
        description="the release whose encoder found the trace, or whose mark the pixels "
        "carry (covered without a manifest), when detection found one",
    )
    protection: Protection | None = Field(
        default=None, description="what re-immunization applied, when it ran"
    )
    signed_image: bytes | None = Field(
        default=None, repr=False, description="the re-immunized image, signed (PNG bytes)"
    )
    saved_to: str | None = None
    recovered_from: str | None = Field(
        default=None,
        description="the resolver whose manifest was used: the file had none, and the "
        "manifest of the signed file its soft binding led to was close enough in pixels",
    )
    seconds: float = 0.0


class SignedOutput(BaseModel):
    """One output image of the call, signed as the model's work (``sign_outputs``)."""

    model_config = ConfigDict(frozen=True)

    index: int
    action: Literal["c2pa.edited", "c2pa.created"]
    digital_source_type: str = Field(description="IPTC digital source type URL")
    software_agent: str = Field(description="the model release that made it")
    ingredient: str | None = Field(
        default=None, description="the edited input's source (its manifest chain is kept)"
    )
    signed_image: bytes = Field(repr=False, description="the output, signed (PNG bytes)")
    seconds: float = 0.0


class ImmunizationReport(BaseModel):
    """Everything the check did during the last call of a pipeline.

    Example:
        >>> pipe.enable_immunization_check(registry=client, signer=vendor)  # doctest: +SKIP
        >>> pipe(prompt, image=photo)  # doctest: +SKIP
        >>> [(c.status, c.action) for c in pipe.immunization_report.images]  # doctest: +SKIP
        [('outdated', 'reimmunized')]
    """

    model_config = ConfigDict(frozen=True)

    pipeline: str
    model: str | None = Field(
        default=None, description="the pipeline's registry release (None: no image to check)"
    )
    policy: Policy
    images: tuple[ImageCheck, ...] = ()
    outputs: tuple[SignedOutput, ...] = Field(
        default=(), description="the call's outputs, signed (with sign_outputs)"
    )
    seconds: float = 0.0

    @property
    def reimmunized(self) -> list[ImageCheck]:
        return [c for c in self.images if c.action == "reimmunized"]
