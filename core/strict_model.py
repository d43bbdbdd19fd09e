"""The base of every section of a job spec: strict, frozen, finite.

Torch-free: the API validates specs with these models.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    # Unknown fields are refused: a typo in a config must not silently fall back to a default.
    # NaN and infinities (Python's json accepts them) are refused too: they pass no range check
    # honestly (NaN fails every comparison, Infinity is "> 0") and only break the job later.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
