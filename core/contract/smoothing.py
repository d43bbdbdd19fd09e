"""Randomized smoothing's settings and record (Cohen, Rosenfeld & Kolter, ICML 2019), torch-free.

The method trains the base classifier under Gaussian noise of standard deviation ``sigma`` on its
inputs, so that the smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` is
accurate; the audit's certification section (core.audit.certify) then proves L2 robustness of
``g`` (not of the base network) with the paper's CERTIFY. core.hardening.smoothing runs it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.contract.certification import DEFAULT_SIGMA
from core.contract.strict_model import StrictModel


class SmoothingSpec(StrictModel):
    """How randomized smoothing trains the base classifier."""

    sigma: float | None = Field(
        None,
        gt=0,
        le=1000,
        description=(
            "Standard deviation of the Gaussian noise added to every training input, in input "
            f"units. Unset: {DEFAULT_SIGMA} times the width of input_range (Cohen et al.'s "
            "smallest level). The certification section certifies at the same sigma."
        ),
    )
    epochs: int = Field(10, ge=1, le=500, description="Epochs of training under noise.")
    start: Literal["upload", "scratch"] = Field(
        "upload",
        description=(
            "'upload': fine-tune the uploaded model under noise; 'scratch': re-initialise it."
        ),
    )

    def resolved_sigma(self, input_range: tuple[float, float]) -> float:
        """The noise level used: the spec's, else DEFAULT_SIGMA times the input range's width."""
        if self.sigma is not None:
            return self.sigma
        return DEFAULT_SIGMA * (float(input_range[1]) - float(input_range[0]))


class SmoothingRecord(BaseModel):
    """What training under noise did: its noise level, epochs and losses."""

    model_config = ConfigDict(extra="forbid")

    sigma: float = Field(description="The noise's standard deviation, in input units.")
    epochs: int
    start: Literal["upload", "scratch"]
    loss_history: list[float] = Field(description="Cross-entropy under noise, per epoch.")
    noisy_train_accuracy: float = Field(
        ge=0, le=1, description="Accuracy under one noise draw on the training set, last epoch."
    )
