"""The checks on arguments callers pass, for the SDK and the CLI alike: counts (seeds,
step counts, limits) and settings given as a model or a dict of its fields.

A typo is refused by name, and never overflows where the value lands nor runs for days.
The CLI states the same bounds as its options' ``min``/``max``.

Example:
    >>> check_seed(0)
    >>> check_steps(0, allow_zero=True)
    >>> check_steps(0, name="steps")
    Traceback (most recent call last):
    photoimmune.sdk.errors.InputError: steps=0: give a whole number from 1 to 10000
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ValidationInfo

from .errors import InputError

#: torch seeds its generators with a signed 64-bit integer.
MAX_SEED = 2**63 - 1
#: PGD steps; past this a count is a typo, not a plan (100 steps already take minutes).
MAX_STEPS = 10_000

SettingsT = TypeVar("SettingsT", bound=BaseModel)


def check_count(
    value: object, name: str, low: int, high: int | None = None, *, note: str = ""
) -> None:
    """Refuse ``value`` unless it is a whole number from ``low`` to ``high`` (None: no
    upper bound); the message names ``name`` and ends with ``note`` (in parentheses).

    Example:
        >>> check_count(3, "limit", 0)
        >>> check_count(-1, "limit", 0, note="None: all of them")
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: limit=-1: give a whole number, 0 or more (None: ...)
    """
    # bool is an Integral too, and `steps=True` is never meant as one step
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
        if low <= number and (high is None or number <= high):
            return
    span = f" from {low} to {high}" if high is not None else f", {low} or more"
    raise InputError(f"{name}={value!r}: give a whole number{span}{f' ({note})' if note else ''}")


def check_seed(seed: object, *, name: str = "seed") -> None:
    """Refuse a seed torch cannot take: not a whole number, negative, or over 64 bits."""
    check_count(seed, name, 0, MAX_SEED)


def check_steps(steps: object, *, name: str = "steps", allow_zero: bool = False) -> None:
    """Refuse a step count that is not a whole number from 1 (0 with ``allow_zero``: no
    iteration, e.g. PGD's start and 8-bit finish alone) to :data:`MAX_STEPS`."""
    check_count(steps, name, 0 if allow_zero else 1, MAX_STEPS)


def settings_of(
    model: type[SettingsT],
    value: SettingsT | Mapping[str, object] | None,
    *,
    name: str = "settings",
) -> SettingsT:
    """``value`` as a ``model`` settings object: None gives the defaults, a dict is
    validated field by field, anything else is refused naming ``name`` and ``model``.

    Example:
        >>> from photoimmune.sdk.jobs import JobSettings
        >>> settings_of(JobSettings, {"steps": 50}).steps
        50
        >>> settings_of(JobSettings, "fast")
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: settings='fast': give JobSettings(...) or a dict ...
    """
    if value is None:
        return model()
    if isinstance(value, model):
        return value
    if isinstance(value, Mapping):
        return model.model_validate(dict(value))
    raise InputError(
        f"{name}={value!r}: give {model.__name__}(...) or a dict of its fields, "
        'e.g. {"eps": "8/255", "steps": 50}'
    )


def _checked_seed(seed: int) -> int:
    check_seed(seed)
    return seed


def _checked_steps(steps: int, info: ValidationInfo) -> int:
    check_steps(steps, name=info.field_name or "steps")
    return steps


def _checked_steps_from_zero(steps: int, info: ValidationInfo) -> int:
    check_steps(steps, name=info.field_name or "steps", allow_zero=True)
    return steps


#: A seed field of a settings model, checked by :func:`check_seed` when the settings are made.
Seed = Annotated[int, AfterValidator(_checked_seed)]
#: A step-count field, 1 to :data:`MAX_STEPS`, checked by :func:`check_steps` when the
#: settings are made, so a typo is refused before any work, by the field's name.
Steps = Annotated[int, AfterValidator(_checked_steps)]
#: A step-count field that may also be 0 (no iteration): 0 to :data:`MAX_STEPS`.
StepsFromZero = Annotated[int, AfterValidator(_checked_steps_from_zero)]


def check_edit_steps(strength: float, steps: int) -> None:
    """Refuse an img2img edit that would run no denoising step at all.

    diffusers runs ``int(steps x strength)`` of the ``steps``; below one it fails deep
    inside the pipeline, after whatever ran before the edit.

    Example:
        >>> check_edit_steps(0.2, 20)
        >>> check_edit_steps(0.2, 4)
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: strength 0.2 of 4 edit steps runs none ...
    """
    if int(steps * strength) >= 1:
        return
    fix = (
        f"use at least {math.ceil(1 / strength)} edit steps, or a higher strength"
        if strength > 0
        else "use a strength above 0"
    )
    raise InputError(
        f"strength {strength} of {steps} edit steps runs none of them "
        f"(diffusers runs int(steps x strength)); {fix}"
    )
