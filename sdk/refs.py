"""``ModelRef``: ``vendor/model@version``, the name of one model release everywhere;
:func:`check_model_name`: ``vendor/model``, the name of a model (all its releases)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, model_validator

from .errors import InputError

_PART = r"[a-z0-9][a-z0-9._-]{0,63}"
_VERSION = r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}"  # semver (1.2.0), a date (2026-11-01) or a plain int
_REF = re.compile(rf"^(?P<vendor>{_PART})/(?P<model>{_PART})@(?P<version>{_VERSION})$")
_MODEL = re.compile(rf"{_PART}/{_PART}")


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


def check_model_name(name: str) -> str:
    """``name`` if it names a model, ``vendor/model`` (every release of it, so no version),
    in the grammar of a :class:`ModelRef`'s vendor and model.

    Raises:
        InputError: saying what is wrong: a version, no vendor, or a part of other
            characters or longer than 64.

    Example:
        >>> check_model_name("photoimmune/tiny-ldm")
        'photoimmune/tiny-ldm'
        >>> check_model_name("photoimmune/tiny-ldm@2")
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: 'photoimmune/tiny-ldm@2': name a model ...
    """
    if _MODEL.fullmatch(name):
        return name
    if "@" in name:
        raise InputError(
            f"{name!r}: name a model (vendor/model), not a version; e.g. {name.partition('@')[0]}"
        )
    if "/" not in name:
        raise InputError(
            f"{name!r}: expected vendor/model; name the model with its vendor "
            f"(e.g. photoimmune/{name} for a bundled model)"
        )
    raise InputError(
        f"{name!r}: expected vendor/model, each part 1-64 lowercase letters, digits, '.', '_' "
        "or '-', starting with a letter or digit; e.g. photoimmune/tiny-ldm"
    )
