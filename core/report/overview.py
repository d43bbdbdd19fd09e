"""The report's summary: what a person reads first (``report.json``'s ``summary``, the top of
report.html).

The verdict, both models' clean accuracy on the whole test split with its count, both models'
robust accuracy at the budget that decided the verdict with 95% intervals, what was run, how long
it took, and the next step. Every number is one the report holds elsewhere: this section only
picks them (:meth:`core.report.schema.Report.summary`). Torch-free.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.names import VerdictLabel
from core.report.intervals import INTERVAL_DESCRIPTION
from core.report.next_step import NextStep


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Measured(_Strict):
    """One accuracy with its sample count and 95% interval."""

    accuracy: float = Field(ge=0, le=1)
    samples: int = Field(ge=0, description="The samples it is measured on.")
    interval: tuple[float, float] | None = Field(None, description=INTERVAL_DESCRIPTION)


class RobustSummary(_Strict):
    """Both models at the budget that decided the verdict (``verdict.deciding``)."""

    norm: Literal["linf", "l2"]
    epsilon: float = Field(description="The budget, in input units.")
    measure: Literal["worst case", "strongest attack"] = Field(
        description="'worst case': robust only where every attack failed on a sample (how "
        "AutoAttack counts); 'strongest attack': the lowest single attack's robust accuracy, "
        "where the worst case was not measured on both models."
    )
    uploaded: Measured
    student: Measured


class WhatRan(_Strict):
    """What the job ran."""

    method: str = Field(description="The hardening method of model.onnx.")
    method_title: str = Field(description="The method, with its paper.")
    compared: list[str] = Field(
        default_factory=list, description="Other methods run beside it for comparison."
    )
    preset: str | None = Field(
        None, description="The evaluation's preset ('default' or 'autoattack'); null: not audited."
    )
    attacks: list[str] = Field(default_factory=list, description="The attacks the audit ran.")
    threat_model: str | None = Field(None, description="The threat model of the budgets.")
    dataset: str = Field(description="The dataset reference ('upload': a file sent with the job).")


class ReportSummary(_Strict):
    """The report in a few numbers, for people: what report.html shows first."""

    verdict: VerdictLabel | None = Field(description="The verdict's label; null: not audited.")
    headline: str | None = Field(description="The verdict's headline; null: not audited.")
    clean_accuracy: dict[str, Measured] = Field(
        description="'uploaded' and 'student' (model.onnx): accuracy on the whole held-out test "
        "split, without attack. (The evaluation's clean accuracy is on its attacked samples "
        "only, a smaller population.)"
    )
    robust: RobustSummary | None = Field(
        description="Both models at the budget that decided the verdict; null: not audited."
    )
    ran: WhatRan
    duration_s: float = Field(ge=0, description="Seconds the whole job took (every stage).")
    next_step: NextStep = Field(description="What to do next, chosen by the verdict.")
