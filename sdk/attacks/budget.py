"""Perturbation budgets: ``"8/255"`` or a float, always in [0, 1] pixel scale.

PhotoGuard's code works on images in [-1, 1], where the same budget is twice
the number (its ε = 0.06 is 0.03 here, its 0.12 demo budget is 16/255 ≈ 0.063).
Budgets are kept as strings such as ``"8/255"`` wherever they are stored, so
canonical JSON never has to round-trip a float.
"""

from __future__ import annotations

from fractions import Fraction

from ..errors import InputError


def parse_budget(
    value: str | float | Fraction, *, name: str = "eps", upper: Fraction | None = Fraction(1)
) -> Fraction:
    """Parse ``"8/255"``, ``"0.03"`` or ``0.03`` into an exact fraction of the pixel range.

    ``upper`` bounds the value (L∞ budgets can't exceed the pixel range; pass
    ``upper=None`` for an L2 radius, which can).

    Example:
        >>> parse_budget("8/255")
        Fraction(8, 255)
        >>> float(parse_budget(0.03))
        0.03
    """
    try:
        frac = Fraction(value if not isinstance(value, float) else str(value))
    except (ValueError, ZeroDivisionError, TypeError):
        raise InputError(
            f"{name}={value!r} is not a number; write it as a fraction of the pixel "
            "range such as 8/255 or 0.03"
        ) from None
    if frac <= 0 or (upper is not None and frac > upper):
        raise InputError(
            f"{name}={value!r} is outside (0, {upper}]; budgets are in [0, 1] pixel scale "
            "(8/255 is typical; PhotoGuard's [-1, 1]-scale 0.06 is 0.03 here)"
        )
    return frac


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
