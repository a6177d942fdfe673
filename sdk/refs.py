"""``ModelRef``: ``vendor/model@version``, the name of one model release everywhere."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, model_validator

from .errors import InputError

_PART = r"[a-z0-9][a-z0-9._-]{0,63}"
_VERSION = r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}"  # semver (1.2.0), a date (2026-11-01) or a plain int
_REF = re.compile(rf"^(?P<vendor>{_PART})/(?P<model>{_PART})@(?P<version>{_VERSION})$")


class ModelRef(BaseModel):
    """A parsed ``vendor/model@version``.

    Example:
        >>> ref = ModelRef.parse("photoimmune/tiny-ldm@2")
        >>> ref.vendor, ref.model, ref.version, str(ref)
        ('photoimmune', 'tiny-ldm', '2', 'photoimmune/tiny-ldm@2')
    """

    model_config = ConfigDict(frozen=True)

    vendor: str
    model: str
    version: str

    @model_validator(mode="after")
    def _check(self) -> ModelRef:
        if not _REF.match(f"{self.vendor}/{self.model}@{self.version}"):
            raise ValueError(
                f"{self.vendor}/{self.model}@{self.version} is not vendor/model@version "
                "(lowercase names; version like 1, 1.2.0 or 2026-11-01)"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REF.match(text.strip())
        if not match:
            raise InputError(
                f"{text!r} is not a model reference; write vendor/model@version, "
                "e.g. photoimmune/tiny-ldm@1"
            )
        return cls(**match.groupdict())

    def __str__(self) -> str:
        return f"{self.vendor}/{self.model}@{self.version}"
