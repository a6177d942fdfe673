"""Bounds on the counts callers pass (seeds, step counts), for the SDK and the CLI alike.

A typo is refused by name, and never overflows where the value lands nor runs for days.
The CLI states the same bounds as its options' ``min``/``max``.

Example:
    >>> check_seed(0)
    >>> check_steps(0, name="steps")
    Traceback (most recent call last):
    photoimmune.sdk.errors.InputError: steps=0: give a whole number from 1 to 10000
"""

from __future__ import annotations

import numbers
from typing import Annotated

from pydantic import AfterValidator

from .errors import InputError

#: torch seeds its generators with a signed 64-bit integer.
MAX_SEED = 2**63 - 1
#: PGD steps; past this a count is a typo, not a plan (100 steps already take minutes).
MAX_STEPS = 10_000


def check_seed(seed: object, *, name: str = "seed") -> None:
    """Refuse a seed torch cannot take: not a whole number, negative, or over 64 bits."""
    _check_count(seed, name, 0, MAX_SEED)


def check_steps(steps: object, *, name: str = "steps") -> None:
    """Refuse a step count that is not a whole number from 1 to :data:`MAX_STEPS`."""
    _check_count(steps, name, 1, MAX_STEPS)


def _checked_seed(seed: int) -> int:
    check_seed(seed)
    return seed


#: A seed field of a settings model, checked by :func:`check_seed` when the settings are made.
Seed = Annotated[int, AfterValidator(_checked_seed)]


def _check_count(value: object, name: str, low: int, high: int) -> None:
    # bool is an Integral too, and `steps=True` is never meant as one step
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or not low <= int(value) <= high:  # type: ignore[call-overload]
        raise InputError(f"{name}={value!r}: give a whole number from {low} to {high}")
