"""The base of every section of a job spec: strict, frozen, finite.

Torch-free: the API validates specs with these models.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    # Unknown fields are refused: a typo in a config must not silently fall back to a default.
    # NaN and infinities (Python's json accepts them) are refused too: they pass no range check
    # honestly (NaN fails every comparison, Infinity is "> 0") and only break the job later.
    # Strict types: "2" or true is no number and 1 no boolean ("student_epochs": "2" was
    # coerced and accepted); a whole number stays a valid float (JSON writes 100 for 100.0).
    # A field made of a JSON array that is a tuple here says strict=False for the array alone
    # (its items stay strict): JSON has no tuples.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
