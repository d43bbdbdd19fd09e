"""How `harden submit --wait` shows a job's ETA (the job resource's eta_s) beside its bar."""

from __future__ import annotations

import pytest

from cli.service_client import duration


def test_durations_read_as_people_say_them() -> None:
    assert duration(0) == "0 s" and duration(44.6) == "45 s"
    assert duration(200) == "3 min 20 s" and duration(3599) == "59 min 59 s"
    assert duration(7500) == "2 h 05 min"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_harden_runs_bars_count_real_units_and_show_the_jobs_eta() -> None:
    # The student's total is an estimate its training corrects (fewer steps once it converges,
    # more when it does not): the bar follows it, and every bar shows the job's ETA at the pace
    # measured so far, the service's eta_s from the same plan.
    from cli.run_cmd import _StageBars
    from core.contract.job_plan import job_plan
    from core.contract.spec import HardenSpec

    spec = HardenSpec(dataset="builtin:digits")
    plan = job_plan(spec)
    clock = _Clock()
    bars = _StageBars(plan, clock=clock)
    try:
        bars("load", 0, 2)
        clock.now = 2.0
        bars("load", 2, 2)
        assert bars.eta_s("load", 2, 2) is None  # no pace yet
        clock.now = 20.0
        for done, total in ((10, 400), (50, 120), (100, 150), (150, 150)):
            bars("student", done, total)
            assert (bars.bar.n, bars.bar.total) == (done, total)
        eta = bars.eta_s("student", 150, 150)
        assert eta is not None and eta == pytest.approx(plan.remaining_s("student", 1.0, 20.0))
        assert "job ETA" in str(bars.bar.postfix)
        bars("evaluate", 30, 3000)
        assert bars.bar.unit == "pass" and "job ETA" in str(bars.bar.postfix)
        # A fifth of the evaluation in 60 s: its rest goes at that pace (harden run knows when
        # the stage began), whatever the training's pace was.
        clock.now = 80.0
        eta = bars.eta_s("evaluate", 600, 3000)
        assert eta == pytest.approx(
            plan.remaining_s("evaluate", 0.2, 80.0, stage_elapsed_s=60.0) or -1
        )
        assert eta is not None and eta >= 60.0 * 4
    finally:
        bars.close()
