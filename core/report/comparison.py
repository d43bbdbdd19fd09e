"""The report's ``comparison_to_baseline``: the hardened model beside a baseline (a previous
job's model or the MLflow champion) on the same attacks, budgets and samples.

Torch-free (the job resource's verdict carries it to the CLI's ``--fail-on regression``).

Both models are measured on the same samples, so their outcomes are paired, and a difference of
two accuracies has a much narrower interval than two independent ones would give. The interval
is Newcombe's hybrid score interval for a difference of paired proportions (Newcombe 1998,
"Improved confidence intervals for the difference between binomial proportions based on paired
data", Statistics in Medicine 17:2635, method 10): each model's Wilson score interval, combined
with the correlation (phi) of the two models' per-sample outcomes. Unlike the Wald interval on
the per-sample differences it does not collapse to a single point when the two models disagree
on no sample, and it stays inside [-1, 1].
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.report.intervals import wilson_interval

# The --fail-on gate that reads this section (cli/gate.py: regression=POINTS); SARIF files its
# trips under rule HARDEN003 (core.report.sarif).
REGRESSION_GATE = "regression"
INTERVAL_METHOD = "Newcombe (1998) hybrid score interval for paired proportions, method 10, 95%"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetOutcomes(_Strict):
    """One model's per-sample worst case at one budget: True where the sample was classified
    right and no attack run there fooled it (on the prefix every attack ran on)."""

    norm: Literal["linf", "l2"] = Field(description="The budget's norm.")
    epsilon: float = Field(description="The budget in input units.")
    robust: list[bool] = Field(description="Per sample: right and fooled by no attack.")


class PerSampleOutcomes(_Strict):
    """One model's per-sample outcomes in one audit: what a paired comparison needs."""

    clean: list[bool] = Field(description="Per attacked sample: classified right, no attack.")
    budgets: list[BudgetOutcomes] = Field(default_factory=list)


class ComparisonRow(_Strict):
    """New against baseline at one budget (or clean, without attack), on the same samples."""

    kind: Literal["clean", "robust"] = Field(
        description="'clean': accuracy without attack; 'robust': the per-sample worst case over "
        "every attack run at the budget."
    )
    norm: Literal["linf", "l2"] | None = Field(None, description="The budget's norm (robust).")
    epsilon: float | None = Field(None, description="The budget in input units (robust).")
    samples: int = Field(ge=1, description="Samples both models were measured on.")
    new_accuracy: float = Field(ge=0, le=1, description="The hardened model's accuracy.")
    baseline_accuracy: float = Field(ge=0, le=1, description="The baseline's accuracy.")
    difference: float = Field(description="New minus baseline (points / 100).")
    difference_low: float = Field(ge=-1, le=1, description="The 95% interval's lower end.")
    difference_high: float = Field(ge=-1, le=1, description="The 95% interval's upper end.")
    new_only: int = Field(ge=0, description="Samples only the new model got right.")
    baseline_only: int = Field(ge=0, description="Samples only the baseline got right.")


class CorruptionComparison(_Strict):
    """New against baseline under common corruptions: both models on the same corrupted images
    (the job's corruptions section's settings), over every corruption and severity."""

    samples: int = Field(ge=1, description="Test images corrupted.")
    new_accuracy: float = Field(ge=0, le=1, description="The hardened model's mean accuracy.")
    baseline_accuracy: float = Field(ge=0, le=1, description="The baseline's mean accuracy.")
    difference: float = Field(description="New minus baseline (points / 100).")
    noise: float = Field(
        ge=0, description="1.96 paired standard errors of the difference (per image, same inputs)."
    )


class CertifiedComparison(_Strict):
    """New against baseline at one certified L2 radius: each one's smoothed classifier certified
    on the same images with the same noise (the job's certification settings)."""

    radius: float = Field(description="The L2 radius, in input units.")
    images: int = Field(ge=1, description="Images certified.")
    new_certified_accuracy: float = Field(ge=0, le=1, description="The hardened model's.")
    baseline_certified_accuracy: float = Field(ge=0, le=1, description="The baseline's.")
    difference: float = Field(description="New minus baseline (points / 100).")


class ComparisonToBaseline(_Strict):
    """The hardened model against the job's baseline: clean and per-budget worst-case robust
    accuracy, each difference with its paired 95% interval; under common corruptions and
    certified, where the job measured those."""

    baseline: str = Field(
        description="What the baseline is, e.g. 'job 3f2a...' or 'mlflow m@champion'."
    )
    baseline_sha256: str = Field(description="sha256 of the baseline's model file.")
    cached: bool = Field(description="The baseline's audit was read from the cache, not rerun.")
    interval: str = Field(INTERVAL_METHOD, description="How each difference's interval is made.")
    rows: list[ComparisonRow] = Field(description="Clean, then each audited budget.")
    corruptions: CorruptionComparison | None = Field(
        None, description="Under common corruptions; null when the job did not measure them."
    )
    certified: list[CertifiedComparison] = Field(
        default_factory=list,
        description="Per certified L2 radius; empty when the job did not certify.",
    )

    def regressions(self, points: float) -> list[ComparisonRow]:
        """Rows where the new model is worse than the baseline by more than ``points``
        percentage points beyond noise: the whole 95% interval of the difference lies below
        -points/100 (its upper end too)."""
        return [row for row in self.rows if row.difference_high < -points / 100]


def row_name(row: ComparisonRow) -> str:
    """'clean' or the budget, e.g. 'linf 0.3', as messages name a row."""
    return "clean" if row.kind == "clean" else f"{row.norm} {row.epsilon:g}"


def paired_difference_interval(new: list[bool], baseline: list[bool]) -> tuple[float, float]:
    """Newcombe's method 10 interval (95%) for mean(new) - mean(baseline), paired per sample."""
    n = len(new)
    both = sum(a and b for a, b in zip(new, baseline, strict=True))
    new_only = sum(a and not b for a, b in zip(new, baseline, strict=True))
    base_only = sum(b and not a for a, b in zip(new, baseline, strict=True))
    neither = n - both - new_only - base_only
    p1, p2 = (both + new_only) / n, (both + base_only) / n
    l1, u1 = wilson_interval(both + new_only, n)
    l2, u2 = wilson_interval(both + base_only, n)
    margins = (both + new_only) * (base_only + neither) * (both + base_only) * (new_only + neither)
    phi = (both * neither - new_only * base_only) / math.sqrt(margins) if margins else 0.0
    difference = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, difference - below), min(1.0, difference + above)


def _row(
    kind: Literal["clean", "robust"],
    new: list[bool],
    baseline: list[bool],
    norm: Literal["linf", "l2"] | None = None,
    epsilon: float | None = None,
) -> ComparisonRow:
    n = min(len(new), len(baseline))
    new, baseline = new[:n], baseline[:n]
    low, high = paired_difference_interval(new, baseline)
    new_accuracy, baseline_accuracy = sum(new) / n, sum(baseline) / n
    return ComparisonRow(
        kind=kind, norm=norm, epsilon=epsilon, samples=n, new_accuracy=new_accuracy,
        baseline_accuracy=baseline_accuracy, difference=new_accuracy - baseline_accuracy,
        difference_low=low, difference_high=high,
        new_only=sum(a and not b for a, b in zip(new, baseline, strict=True)),
        baseline_only=sum(b and not a for a, b in zip(new, baseline, strict=True)),
    )  # fmt: skip


def compare(
    new: PerSampleOutcomes, baseline: PerSampleOutcomes, *, label: str, sha256: str, cached: bool
) -> ComparisonToBaseline:
    """Row by row: clean accuracy, then each budget both audits measured (the same ones, as the
    baseline is audited with the new model's settings)."""
    rows = [_row("clean", new.clean, baseline.clean)]
    theirs = {(b.norm, b.epsilon): b.robust for b in baseline.budgets}
    for budget in new.budgets:
        other = theirs.get((budget.norm, budget.epsilon))
        if other:
            rows.append(_row("robust", budget.robust, other, budget.norm, budget.epsilon))
    return ComparisonToBaseline(baseline=label, baseline_sha256=sha256, cached=cached, rows=rows)
