"""Perturbation budgets: ``"8/255"`` or a float, always in [0, 1] pixel scale.

PhotoGuard's code works on images in [-1, 1], where the same budget is twice
the number (its ε = 0.06 is 0.03 here, its 0.12 demo budget is 16/255 ≈ 0.063).
Budgets are kept as strings such as ``"8/255"`` wherever they are stored, so
canonical JSON never has to round-trip a float.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Annotated

from pydantic import AfterValidator

from ..errors import InputError

#: The longest budget text read: ``"8/255"`` or ``"0.0313725"`` need far less. A service
#: reads it from a request, so a longer one is refused, and shown only in part.
MAX_BUDGET_CHARS = 32
#: The smallest budget: a saved image holds whole 8-bit levels, so under one level
#: (1/255) no pixel can change. The same holds for an L2 radius: the shortest change on
#: the 8-bit grid moves one channel of one pixel by one level, an L2 norm of 1/255.
MIN_BUDGET = Fraction(1, 255)
# The attack rounds a budget to whole levels with this tolerance (sdk/attacks/pgd.py):
# a float 1/255, written 0.00392156862745098 and a hair under, still moves one level.
_LEVEL_TOLERANCE = Fraction(1, 10**9)


def parse_budget(
    value: str | float | Fraction, *, name: str = "eps", upper: Fraction | None = Fraction(1)
) -> Fraction:
    """Parse ``"8/255"``, ``"0.03"`` or ``0.03`` into an exact fraction of the pixel range.

    ``upper`` bounds the value (L∞ budgets can't exceed the pixel range; pass
    ``upper=None`` for an L2 radius, which can). Under :data:`MIN_BUDGET`, one 8-bit
    level, a budget could change no pixel of the saved image: refused for either norm.

    Example:
        >>> parse_budget("8/255")
        Fraction(8, 255)
        >>> float(parse_budget(0.03))
        0.03
        >>> parse_budget("0.001")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        photoimmune.sdk.errors.InputError: eps='0.001' is below 1/255, one 8-bit level: ...
    """
    text = str(value) if isinstance(value, float) else value
    if isinstance(text, str) and len(text) > MAX_BUDGET_CHARS:
        raise InputError(
            f"{name}={text[:16]!r}... is {len(text)} characters long, over the "
            f"{MAX_BUDGET_CHARS} a budget needs; write it as a fraction of the pixel range "
            "such as 8/255 or 0.03"
        )
    frac = _exact(text, name)
    if frac <= 0 or (upper is not None and frac > upper):
        raise InputError(
            f"{name}={value!r} is outside (0, {upper}]; budgets are in [0, 1] pixel scale "
            "(8/255 is typical; PhotoGuard's [-1, 1]-scale 0.06 is 0.03 here)"
        )
    if frac < MIN_BUDGET * (1 - _LEVEL_TOLERANCE):
        raise _below_one_level(value, name)
    return frac


def _exact(value: str | Fraction, name: str) -> Fraction:
    """``value`` as an exact fraction, or an :class:`InputError` saying why it is none."""
    if isinstance(value, str) and "e" in value.lower():
        # Fraction computes 10**exponent exactly: "1e999999999" would take minutes and
        # gigabytes. A float reads it at once, and beyond a float's range is no budget.
        try:
            rough = float(value)
        except ValueError:
            rough = 1.0  # no float: Fraction says what is wrong with it
        if rough == 0:  # zero, or under a float's smallest: under one level either way
            raise _below_one_level(value, name)
        if math.isinf(rough):
            raise InputError(
                f"{name}={value!r} is beyond a float's range; budgets are in [0, 1] pixel "
                "scale, such as 8/255 or 0.03"
            )
    try:
        return Fraction(value)
    except (ValueError, ZeroDivisionError, TypeError):
        raise InputError(
            f"{name}={value!r} is not a number; write it as a fraction of the pixel "
            "range such as 8/255 or 0.03"
        ) from None


def _below_one_level(value: str | float | Fraction, name: str) -> InputError:
    return InputError(
        f"{name}={value!r} is below 1/255, one 8-bit level: the saved image rounds every "
        "pixel to whole levels, so it would change no pixel and protect nothing; use at "
        "least 1/255 (8/255 is typical)"
    )


def format_budget(frac: Fraction) -> str:
    """The canonical text form: ``"8/255"`` for whole 8-bit levels, else a decimal.

    Example:
        >>> format_budget(Fraction(16, 255)), format_budget(Fraction(3, 100))
        ('16/255', '0.03')
    """
    levels = frac * 255
    if levels.denominator == 1:
        return f"{levels.numerator}/255"
    return format(float(frac), ".6g")


def budget_levels(frac: Fraction) -> int:
    """How many whole 8-bit levels a pixel may move: ``floor(eps * 255)``.

    The saved image is 8-bit, so this, not ``eps`` itself, bounds the final
    perturbation.

    Example:
        >>> budget_levels(Fraction(3, 100))
        7
    """
    return int(frac * 255)


def _checked_budget(text: str) -> str:
    parse_budget(text)
    return text


#: A budget field of a settings model: the text as given, checked by :func:`parse_budget`
#: when the settings are made ("abc", "0", "2" refused by name, before any work).
BudgetText = Annotated[str, AfterValidator(_checked_budget)]
