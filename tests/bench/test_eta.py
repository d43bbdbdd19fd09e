"""bench/eta.py's arithmetic: the ETA at each checkpoint comes from the last write made by then,
through the job resource, against the time the job really had left."""

from __future__ import annotations

import pytest

from bench.eta import CHECKPOINTS, Write, checks
from core.contract.job_plan import job_plan, overall_progress, progress_stages
from core.contract.spec import HardenSpec


def test_each_checkpoint_reads_the_last_write_before_it() -> None:
    spec = HardenSpec(dataset="builtin:digits")
    stages = progress_stages(spec)
    plan = job_plan(spec)
    # A job at a steady pace of 1 ms per planned pass whose stages report at their ends.
    writes, now = [], 0.0
    for stage in plan.order:
        now += plan.fixed_s.get(stage, 0.0) + 1e-3 * plan.work.get(stage, 0.0)
        writes.append(Write(now, stage, overall_progress(stages, stage, 1.0) or 0.0))
    found = checks(spec, writes, now)
    assert [c.fraction for c in found] == list(CHECKPOINTS)
    for check in found:
        last = [w for w in writes if w.seconds <= check.seconds][-1]
        assert (check.stage, check.progress) == (last.stage, last.progress)
        assert check.actual_s == pytest.approx(now - check.seconds)
        assert check.eta_s is not None and check.eta_s >= 0
