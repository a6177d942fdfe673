"""Scorecards: how much of a target's protection survives purification, under one protocol.

A vendor measures its release's target with :func:`score_target` (``photoimmune
targets score``) and publishes the result, ``scorecard.json``, beside the
target's descriptor and tensors; the registry signs it like them and
``photoimmune registry show`` prints it. Everyone reads the same numbers,
measured the same way:

**Protocol v1** (:class:`ScoreProtocol`, fixed so cards compare): the held-out
photos chelsea, coffee and camera from scikit-image (never trained on),
centre-cropped to 128 px; each is treated with same-ε random noise (the
baseline) and with the encoder attack at ε = 8/255, 100 steps, as
:func:`~photoimmune.sdk.immunization.immunize` does by default; then edited
with img2img, strength 0.5, 20 steps, guidance 7.5, seed 0, under two prompts,
after each of ``none``, ``jpeg75``, ``upscale``, ``diffpure`` and ``impress``
(:mod:`photoimmune.sdk.evaluate.processing`). Per step the card holds the SSIM
and PSNR of the edits against the clean photo's edit, the *gap* (noise's
similarity minus the immunized photo's: how much more immunization disrupts
the edit than noise does) and the fraction of the unprocessed gap *kept*.

This module is pure data (no torch), so the registry can check cards; measuring
loads the model (:func:`score_target`).

Example:
    >>> card = score_target("tiny-ldm@2")  # doctest: +SKIP
    >>> card.score("jpeg75").ssim_kept  # doctest: +SKIP
    0.98
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .descriptor import SHA256_HEX
from .errors import InputError
from .refs import ModelRef

SCORECARD_NAME = "scorecard.json"


class ScorecardError(InputError):
    """A scorecard that cannot be read, or that belongs to another target."""


class ScoreProtocol(BaseModel):
    """How a scorecard is measured; the defaults are protocol v1 (see the module's text)."""

    model_config = ConfigDict(frozen=True)

    version: Literal[1] = 1
    photos: tuple[str, ...] = Field(
        default=("chelsea.png", "coffee.png", "camera.png"), min_length=1
    )
    size: int = 128
    eps: str = "8/255"
    method: Literal["encoder"] = "encoder"
    steps: int = 100
    eot: bool = False
    edit: Literal["img2img"] = "img2img"
    prompts: tuple[str, ...] = ("a photo of a cat in the snow", "an oil painting of a landscape")
    strength: float = 0.5
    edit_steps: int = 20
    seed: int = 0
    processing: tuple[str, ...] = ("none", "jpeg75", "upscale", "diffpure", "impress")


#: The protocol every scorecard is measured under unless a test asks for less.
PROTOCOL = ScoreProtocol()


class PurifierScore(BaseModel):
    """One processing step's row: similarities of the edits to the clean photo's edit
    (higher = less disrupted), the gap and the fraction of the unprocessed gap kept."""

    model_config = ConfigDict(frozen=True)

    processing: str
    ssim_noise: float
    ssim_immunized: float
    ssim_gap: float
    ssim_kept: float | None = Field(description="None where the unprocessed gap is not > 0")
    psnr_noise: float
    psnr_immunized: float
    psnr_gap: float
    psnr_kept: float | None


class Scorecard(BaseModel):
    """A target's measured protection under :attr:`protocol`.

    Example:
        >>> card = parse_scorecard(open("scorecard.json", "rb").read())  # doctest: +SKIP
        >>> card.score("upscale").ssim_kept  # doctest: +SKIP
        0.74
    """

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    target: ModelRef
    target_digest: str = Field(pattern=SHA256_HEX)
    protocol: ScoreProtocol
    scores: tuple[PurifierScore, ...]
    immunize_seconds_per_photo: float = Field(
        description="wall time of the attack per photo on the machine that measured"
    )
    measured: str = Field(description="when, UTC, ISO 8601")

    def score(self, processing: str) -> PurifierScore:
        """The row of one processing step (``"none"``, ``"jpeg75"``...)."""
        for row in self.scores:
            if row.processing == processing:
                return row
        raise ScorecardError(
            f"{self.target}'s scorecard has no {processing!r} row; it has "
            f"{', '.join(r.processing for r in self.scores)}"
        )

    def to_json(self) -> bytes:
        """The file's bytes: indented JSON, readable in a diff."""
        return (self.model_dump_json(indent=2) + "\n").encode()


def parse_scorecard(data: bytes, *, digest: str | None = None) -> Scorecard:
    """A scorecard from its file's bytes; with ``digest``, checked to be that target's.

    Example:
        >>> try:
        ...     parse_scorecard(b"{}")
        ... except ScorecardError as err:
        ...     print(str(err)[:49])
        not a scorecard (target: Field required, and 5 mo
    """
    try:
        card = Scorecard.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(map(str, errors[0]["loc"]))
        more = f", and {len(errors) - 1} more" if len(errors) > 1 else ""
        raise ScorecardError(
            f"not a scorecard ({where + ': ' if where else ''}{errors[0]['msg']}{more}); "
            "measure one with `photoimmune targets score`"
        ) from None
    if digest is not None and card.target_digest != digest:
        raise ScorecardError(
            f"the scorecard measured target {card.target_digest[:16]}…, not this release's "
            f"{digest[:16]}…; measure it again with `photoimmune targets score`"
        )
    return card


def bundled_scorecard(target: Any) -> bytes | None:
    """The committed scorecard of a bundled release, bound to ``target`` as built here.

    A target's digest covers its target latent, which the encoder computes, and that
    latent differs in its last bits between CPUs and even thread counts (measured:
    AVX-512 against AVX2, and 2 threads against 1, give four digests for tiny-ldm@2).
    The card measured the same model and recipe, so the bundle, acting as the
    vendor, binds it to the target this machine built, as it binds its immunizer.

    Example:
        >>> from photoimmune.sdk.targets import build_target
        >>> target = build_target("tiny-ldm@2")
        >>> parse_scorecard(bundled_scorecard(target), digest=target.digest).target == target.ref
        True
    """
    from .models.bundled import BUNDLED_ROOT, VENDOR

    if target.ref.vendor != VENDOR:
        return None
    path = BUNDLED_ROOT / "scorecards" / f"{target.ref.model}-{target.ref.version}.json"
    if not path.is_file():
        return None
    card = parse_scorecard(path.read_bytes())
    if card.target != target.ref:
        raise ScorecardError(f"{path.name} measured {card.target}, not {target.ref}")
    return card.model_copy(update={"target_digest": target.digest}).to_json()


def score_target(
    target: Any,
    photos: Sequence[str | os.PathLike[str]] | None = None,
    *,
    protocol: ScoreProtocol | None = None,
    progress: Callable[[str], None] | None = None,
) -> Scorecard:
    """Measure ``target`` under ``protocol`` (its photos, or ``photos`` instead).

    Args:
        target: an :class:`~photoimmune.sdk.targets.AttackTarget` with weights attached,
            or a bundled model name / local diffusers folder to build one from.
        photos: paths or scikit-image sample names; default the protocol's.
        protocol: what to measure. Default: :data:`PROTOCOL`; keep it for a card others
            compare.
        progress: called with a message at each stage.

    Example:
        >>> card = score_target("tiny-ldm@2", ["chelsea.png"])  # doctest: +SKIP
        >>> [row.processing for row in card.scores]  # doctest: +SKIP
        ['none', 'jpeg75', 'upscale', 'diffpure', 'impress']
    """
    from datetime import UTC, datetime

    from .evaluate.harness import GAP_METRICS, EvalSettings, evaluate
    from .samples import sample_path
    from .targets import AttackTarget, build_target

    built = target if isinstance(target, AttackTarget) else build_target(target)
    chosen = protocol or PROTOCOL
    names = tuple(str(p) for p in photos) if photos else chosen.photos
    used = chosen.model_copy(update={"photos": names})
    sources = [p if Path(p).exists() else str(sample_path(p)) for p in names]
    settings = EvalSettings(
        model=built.model_path,
        edit=used.edit,
        prompts=used.prompts,
        strength=used.strength,
        edit_steps=used.edit_steps,
        seed=used.seed,
        size=used.size,
        eps=used.eps,
        steps=used.steps,
        methods=("noise", used.method),
        processing=used.processing,  # type: ignore[arg-type]  # checked by EvalSettings
        eot=used.eot,
    )
    report = evaluate(sources, settings, target=built, progress=progress)
    scores = []
    for kept in report.kept():
        row: dict[str, Any] = {"processing": kept.processing}
        for name in GAP_METRICS:
            fraction = kept.kept[name]
            row |= {
                f"{name}_noise": _round(report.mean("noise", kept.processing, name)),
                f"{name}_immunized": _round(report.mean(used.method, kept.processing, name)),
                f"{name}_gap": _round(kept.gap[name]),
                f"{name}_kept": None if fraction is None else _round(fraction),
            }
        scores.append(PurifierScore(**row))
    return Scorecard(
        target=built.ref,
        target_digest=built.digest,
        protocol=used,
        scores=tuple(scores),
        immunize_seconds_per_photo=_round(report.treat_seconds[used.method] / len(sources)),
        measured=datetime.now(UTC).replace(microsecond=0).isoformat(),
    )


def _round(value: float) -> float:
    return round(float(value), 4)
