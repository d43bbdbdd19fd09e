"""95% intervals for the report's accuracies: Wilson's score interval for one proportion.

Every accuracy in ``report.json`` is a share of samples (correct / attacked, certified / images),
so its interval is a binomial one. Wilson's (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it
over the Wald interval) stays inside [0, 1] and does not collapse to a point at 0% or 100%: a
hardened model with 0 of 100 samples robust is reported as 0% with an interval up to 3.7%, not as
exactly 0. The verdict's noise margins (1.96 standard errors of a difference) and the baseline
comparison's paired interval (Newcombe's method 10, built from these) use the same z. Torch-free.
"""

from __future__ import annotations

import math
from typing import Annotated, Final

from pydantic import Field

Z_95: Final = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95%
INTERVAL_METHOD: Final = "Wilson score interval, 95% (z = 1.96)"
INTERVAL_DESCRIPTION: Final = (
    "(low, high): the 95% Wilson score interval of the accuracy beside it, from its sample count "
    "(core/report/intervals.py)."
)

# An accuracy's interval as report.json stores it: [low, high].
Interval = Annotated[tuple[float, float], Field(description=INTERVAL_DESCRIPTION)]


def wilson_interval(successes: int, samples: int) -> tuple[float, float]:
    """The 95% Wilson score interval of ``successes / samples`` (``(0, 1)`` for no samples)."""
    if samples <= 0:
        return 0.0, 1.0
    p = successes / samples
    denominator = 1 + Z_95**2 / samples
    centre = (p + Z_95**2 / (2 * samples)) / denominator
    half = Z_95 * math.sqrt(p * (1 - p) / samples + Z_95**2 / (4 * samples**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(accuracy: float, samples: int) -> tuple[float, float]:
    """The 95% Wilson interval of an accuracy measured on ``samples`` samples (the count of
    successes recovered from the share, which the report stores rounded to float precision)."""
    return wilson_interval(round(accuracy * samples), samples)
