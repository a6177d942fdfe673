"""``ModelRef``: ``vendor/model@version``, the name of one model release everywhere;
:func:`check_model_name`: ``vendor/model``, the name of a model (all its releases)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, model_validator

from .errors import InputError

# Each pattern beside the words every message uses for it: change one, change the other.
_PART = r"[a-z0-9][a-z0-9._-]{0,63}"
#: What a vendor or a model name is made of, as messages say it.
NAME_RULE = "1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
_VERSION = r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}"  # semver (1.2.0), a date (2026-11-01) or a plain int
#: What a version is made of, as messages say it.
VERSION_RULE = (
    "1-64 letters, digits, '.', '+', '_' or '-', starting with a letter or digit, "
    "like 1, 1.2.0 or 2026-11-01"
)
_REF = re.compile(rf"^(?P<vendor>{_PART})/(?P<model>{_PART})@(?P<version>{_VERSION})$")
_MODEL = re.compile(rf"{_PART}/{_PART}")
_NAME = re.compile(_PART)
_VERSION_PART = re.compile(_VERSION)


class ModelRef(BaseModel):
    """A parsed ``vendor/model@version``.

    Example:
        >>> ref = ModelRef.parse("photoimmune/tiny-ldm@2")
        >>> ref.vendor, ref.model, ref.version, str(ref)
        ('photoimmune', 'tiny-ldm', '2', 'photoimmune/tiny-ldm@2')
        >>> ModelRef.parse("Acme/m@1")
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: 'Acme/m@1' is not a model reference: the vendor ...
    """

    model_config = ConfigDict(frozen=True)

    vendor: str
    model: str
    version: str

    @model_validator(mode="after")
    def _check(self) -> ModelRef:
        problem = _broken_parts(self.vendor, self.model, self.version)
        if problem:
            raise ValueError(f"{self} is not vendor/model@version: {problem}")
        return self

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REF.match(text.strip())
        if match:
            return cls(**match.groupdict())
        names, at, version = text.strip().partition("@")
        vendor, slash, model = names.partition("/")
        if at and slash:  # the shape is right: say which part is not
            raise InputError(
                f"{text!r} is not a model reference: {_broken_parts(vendor, model, version)}; "
                "e.g. photoimmune/tiny-ldm@1"
            )
        raise InputError(
            f"{text!r} is not a model reference; write vendor/model@version, "
            "e.g. photoimmune/tiny-ldm@1"
        )

    def __str__(self) -> str:
        return f"{self.vendor}/{self.model}@{self.version}"


def check_model_name(name: str) -> str:
    """``name`` if it names a model, ``vendor/model`` (every release of it, so no version),
    in the grammar of a :class:`ModelRef`'s vendor and model.

    Raises:
        InputError: saying what is wrong: nothing named, a version, no vendor, or a part
            of other characters or longer than 64.

    Example:
        >>> check_model_name("photoimmune/tiny-ldm")
        'photoimmune/tiny-ldm'
        >>> check_model_name("photoimmune/tiny-ldm@2")
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: 'photoimmune/tiny-ldm@2': name a model ...
    """
    if _MODEL.fullmatch(name):
        return name
    if not name.strip():
        raise InputError(
            f"{name!r} is not a model name; write vendor/model, e.g. photoimmune/tiny-ldm"
        )
    if "@" in name:
        raise InputError(
            f"{name!r}: name a model (vendor/model), not a version; e.g. {name.partition('@')[0]}"
        )
    if "/" not in name:
        raise InputError(
            f"{name!r}: expected vendor/model; name the model with its vendor "
            f"(e.g. photoimmune/{name} for a bundled model)"
        )
    vendor, _, model = name.partition("/")
    raise InputError(
        f"{name!r}: expected vendor/model: {_broken_parts(vendor, model)}; "
        "e.g. photoimmune/tiny-ldm"
    )


def _broken_parts(vendor: str, model: str, version: str | None = None) -> str:
    """Which parts of a reference break the grammar, and what they must be made of, in
    words ("" when none does)."""
    names = [
        f"the {what} {text!r}"
        for what, text in (("vendor", vendor), ("model", model))
        if not _NAME.fullmatch(text)
    ]
    problems = [f"{' and '.join(names)} must be {NAME_RULE}"] if names else []
    if version is not None and not _VERSION_PART.fullmatch(version):
        problems.append(f"the version {version!r} must be {VERSION_RULE}")
    return "; ".join(problems)
