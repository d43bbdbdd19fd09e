"""``--fail-on regression=POINTS``: the hardened model against the job's baseline, tripped only by
a loss beyond noise (the paired interval's upper end below -POINTS); its SARIF result is tested
in tests/core/report/test_comparison.py."""

from __future__ import annotations

import pytest

from cli.gate import GateError, check, parse_gates
from tests.cli.test_gates import verdict
from tests.core.report.test_comparison import comparison_of


def test_the_gate_trips_on_a_loss_beyond_noise_and_its_points_only() -> None:
    # Clean 100% -> 95%: 5 points lost (interval well below -2); robust 75% -> 74%: noise.
    summary = verdict("real gain", 0.5, 0.45).model_copy(
        update={"baseline": comparison_of(380, 296)}
    )
    two, ten = check(parse_gates(["regression=2", "regression=10"]), summary)
    assert not two.passed and "clean: -5.0 points" in two.message
    assert "linf" not in two.message and "m@champion" in two.message
    assert ten.passed
    # No loss at all passes even at 0 points.
    (zero,) = check(parse_gates(["regression=0"]), summary.model_copy(
        update={"baseline": comparison_of(400, 300)}))  # fmt: skip
    assert zero.passed
    # No comparison to check: the gate trips and says how to get one.
    (missing,) = check(parse_gates(["regression=2"]), verdict("real gain", 0.5, 0.45))
    assert not missing.passed and "baseline" in missing.message
    for bad in ("regression=-1", "regression=101", "regression=two"):
        with pytest.raises(GateError):
            parse_gates([bad])
