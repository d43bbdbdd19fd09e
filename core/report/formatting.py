"""Numbers as people read them in the report, the verdict's sentences and the CLI.

Budgets that are whole 255ths of the input range (the cifar and imagenet threat models' 2/255,
4/255, 8/255) print as such, not as 0.0313725; seconds print as "42 s" or "6 min 40 s"; other
numbers print without an exponent in the range people read (never "4e+02"). Torch-free.
"""

from __future__ import annotations

import math

_LEVELS = 255  # 8-bit images: budgets are often given in steps of one grey level


def epsilon_text(epsilon: float | None, width: float = 1.0) -> str:
    """A budget in input units: "8/255" when it is a whole number of 255ths of the input range
    (``width``) and no short decimal (0.2 is 51/255 but reads as 0.2), else "0.3"; "8/255 of the
    range (8)" when the range is not [0, 1]-wide; "unbounded" for None."""
    if epsilon is None:
        return "unbounded"
    fraction = epsilon / width if width > 0 else epsilon
    levels = fraction * _LEVELS
    whole = round(levels)
    short_decimal = abs(fraction * 100 - round(fraction * 100)) < 1e-6
    if whole >= 1 and abs(levels - whole) < 1e-4 and not short_decimal:
        return (
            f"{whole}/{_LEVELS}"
            if width == 1.0
            else f"{whole}/{_LEVELS} of the range ({epsilon:g})"
        )
    return number_text(epsilon)


def budget_text(norm: str, epsilon: float | None, width: float = 1.0) -> str:
    """A norm and budget: "L-inf ε=8/255", "L2 ε=0.5" ("unbounded" without a budget)."""
    name = {"linf": "L-inf", "l2": "L2", "l0": "L0"}.get(norm, norm)
    return f"{name} unbounded" if epsilon is None else f"{name} ε={epsilon_text(epsilon, width)}"


def seconds_text(seconds: float) -> str:
    """A duration: "< 0.1 s", "0.4 s", "42 s", "6 min 40 s", "2 h 5 min"."""
    if seconds < 0.05:
        return "< 0.1 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def number_text(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits and no exponent from 0.001 to a million
    (400, 1,234, 0.0123); beyond that range "1.2×10⁻⁵"; None as "–"."""
    if value is None:
        return "–"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e6:
        decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
        text = f"{value:,.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, exponent = f"{value:.{max(digits - 1, 0)}e}".split("e")
    superscript = str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mantissa.rstrip('0').rstrip('.')}×10{superscript}"
