"""``Protection``: the record of one attack applied to one image.

It travels inside signed manifests, so every number is an int or a string
(``"8/255"``, ``"0.00153"``): canonical JSON never has to round-trip a float.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .attacks.budget import parse_budget
from .descriptor import SHA256_HEX, Method
from .errors import InputError
from .refs import ModelRef


class Protection(BaseModel):
    """What one image was immunized against, and how well.

    A field out of its rules (a target that is no ``vendor/model@version``, a budget
    :func:`~.attacks.budget.parse_budget` refuses for its norm, a loss that is not a
    finite number) raises pydantic's ``ValidationError`` (a ``ValueError``) naming the
    field, as every record model does: readers of manifests and catalogs catch it as a
    malformed record (a manifest's verdict is then ``invalid``), so it stays one type
    wherever the record comes from.

    Example:
        >>> p = Protection(target_ref="photoimmune/tiny-ldm@1", target_digest="ab" * 32,
        ...                method="encoder", norm="linf", eps="8/255", steps=100,
        ...                loss_before="0.0212", loss_after="0.00413", duration_ms=5300)
        >>> p.eps
        '8/255'
    """

    model_config = ConfigDict(frozen=True)

    target_ref: str = Field(description="vendor/model@version the image is protected against")
    target_digest: str = Field(pattern=SHA256_HEX, description="sha256 of the attack target")
    method: Method
    norm: Literal["linf", "l2"]
    eps: str = Field(description='budget in [0, 1] pixel scale, e.g. "8/255"')
    steps: int = Field(ge=0)
    loss_before: str = Field(
        description="the method's loss on the clean image (for the untargeted edit attack, "
        "-log(1e-4 + distance of the edit's prediction from the clean one's))"
    )
    loss_after: str = Field(description="the same loss on the immunized image as saved")
    duration_ms: int = Field(ge=0)

    @field_validator("target_ref")
    @classmethod
    def _check_ref(cls, value: str) -> str:
        try:
            return str(ModelRef.parse(value))
        except InputError as err:  # pydantic reports ValueErrors only
            raise ValueError(str(err)) from None

    @field_validator("loss_before", "loss_after")
    @classmethod
    def _check_loss(cls, value: str) -> str:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number, such as '0.0212'")
        return value

    @model_validator(mode="after")
    def _check_eps(self) -> Protection:
        # An L2 radius may exceed the pixel range, an L∞ budget may not (parse_budget).
        try:
            parse_budget(self.eps, upper=None if self.norm == "l2" else Fraction(1))
        except InputError as err:
            raise ValueError(str(err)) from None
        return self

    @property
    def loss_cut(self) -> float:
        """The share of the target's loss the immunization took away (:func:`loss_cut`).

        Example:
            >>> round(Protection(target_ref="photoimmune/tiny-ldm@1", target_digest="ab" * 32,
            ...     method="encoder", norm="linf", eps="8/255", steps=100, loss_before="0.02",
            ...     loss_after="0.015", duration_ms=5300).loss_cut, 3)
            0.25
        """
        before = float(self.loss_before)
        if before == 0:  # no loss to take away: a cut of it is no number
            return 0.0
        return loss_cut(before, float(self.loss_after))


def loss_cut(before, after):
    """``1 - after / before``: how much of the loss an attack took away, for floats or
    per-image tensors alike (0 for an untouched image, 1 for one that reaches the target).

    Example:
        >>> loss_cut(0.02, 0.005)
        0.75
    """
    return 1 - after / before


def format_loss(value: float) -> str:
    """Losses as short decimal strings (5 significant digits).

    Example:
        >>> format_loss(0.000123456789)
        '0.00012346'
    """
    return format(float(value), ".5g")
