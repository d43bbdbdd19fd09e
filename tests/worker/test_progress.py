"""Progress throttling and the cached cancel flag, on a fake clock."""

from __future__ import annotations

import pytest

from core.contract.methods import CATALOGUE, DEFAULT_METHOD, job_stages
from worker.progress import CancelCheck, ProgressReporter

DISTILLATION = job_stages(DEFAULT_METHOD)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_throttled_but_stage_changes_are_written_at_once():
    clock, writes = Clock(), []
    report = ProgressReporter(
        lambda s, p: writes.append((s, p)), DISTILLATION, interval_s=0.5, clock=clock
    )
    for step in range(100):  # 100 steps inside 0.1 s
        report("teacher", step + 1, 100)
        clock.now += 0.001
    assert len(writes) == 1 and writes[0][0] == "teacher"
    clock.now += 0.5
    report("teacher", 100, 100)
    report("soft_labels", 1, 10)
    assert [w[0] for w in writes] == ["teacher", "teacher", "soft_labels"]


def test_progress_is_monotonic_and_reaches_one():
    clock, writes = Clock(), []
    report = ProgressReporter(
        lambda s, p: writes.append(p),
        job_stages(DEFAULT_METHOD, evaluation=False),
        interval_s=0,
        clock=clock,
    )
    for stage in ("load", "teacher", "soft_labels", "student", "export", "report"):
        for step in range(1, 4):
            report(stage, step, 3)
    report("teacher", 0, 3)  # out of order: must not go back
    assert writes == sorted(writes)
    assert abs(writes[-1] - 1.0) < 1e-9 and 0 < writes[0] < 0.05


def test_evaluation_share_counts_only_when_enabled():
    with_eval = ProgressReporter(lambda s, p: None, job_stages(DEFAULT_METHOD))
    without = ProgressReporter(lambda s, p: None, job_stages(DEFAULT_METHOD, evaluation=False))
    assert with_eval.overall("export", 1, 1) < without.overall("export", 1, 1)


def test_cancel_flag_is_read_at_most_once_per_interval():
    clock, reads = Clock(), []
    flag = [False]

    def read() -> bool:
        reads.append(clock.now)
        return flag[0]

    check = CancelCheck(read, interval_s=0.5, clock=clock)
    assert not any(check() for _ in range(1000))
    assert len(reads) == 1
    flag[0] = True
    assert not check()  # cached until the interval passes
    clock.now += 0.5
    assert check() and check() and len(reads) == 2


def test_deadline_turns_should_cancel_true():
    clock = Clock()
    check = CancelCheck(lambda: False, interval_s=0.5, deadline_s=10, clock=clock)
    assert not check()
    clock.now += 10
    assert check() and check.timed_out


@pytest.mark.parametrize("method", list(CATALOGUE))
def test_every_method_declares_weighted_stages_that_fill_the_job(method):
    stages = job_stages(method)
    names = [stage.name for stage in stages]
    assert len(set(names)) == len(names) and all(stage.weight > 0 for stage in stages)
    assert names[0] == "load" and names[-4:] == ["export", "evaluate", "corruptions", "report"]
    # Each method's stages weigh alike, so a job's progress pace does not depend on its method.
    assert sum(stage.weight for stage in stages) == pytest.approx(1.0)


@pytest.mark.parametrize("method", list(CATALOGUE))
def test_progress_follows_the_job_order_and_skips_evaluate_when_disabled(method):
    for evaluation in (True, False):
        stages = job_stages(method, evaluation=evaluation)
        report = ProgressReporter(lambda s, p: None, stages)
        ends = [report.overall(stage.name, 1, 1) for stage in stages]
        assert report.overall(stages[0].name, 0, 1) == 0.0 and ends[-1] == pytest.approx(1.0)
        assert ends == sorted(ends) and len(set(ends)) == len(ends)
        assert evaluation == ("evaluate" in [stage.name for stage in stages])


def test_the_eta_reads_back_what_the_worker_stored(services):
    # The worker writes the overall progress over the job's stages; the job resource reads the
    # running stage's fraction back out of it with core.contract.job_plan.progress_stages: both
    # must weigh the same stages alike, for every report the core makes.
    from core.contract.job_plan import progress_stages, stage_fraction
    from core.contract.spec import HardenSpec
    from tests.worker.conftest import queue_job
    from tests.worker.real_pipeline import TINY_EVALUATION, RecordingPipeline
    from worker.runner import run_job

    job_id = queue_job(services, {"evaluation": TINY_EVALUATION})
    stored: list[tuple[str | None, float]] = []

    def read_back(stage: str, done: int, total: int) -> None:
        job = services.store.get(job_id)
        stored.append((job.stage, job.progress))

    pipeline = RecordingPipeline(hook=read_back)
    assert run_job(services, job_id, pipeline=pipeline) == "succeeded"
    stages = progress_stages(HardenSpec.model_validate(services.store.get(job_id).spec))
    # The hook runs before each report is written: the row then holds the report before it.
    pairs = list(zip(pipeline.progress, stored[1:], strict=False))
    evaluated = [(report, row) for report, row in pairs if report[0] == "evaluate"]
    assert len(evaluated) > 3
    for (stage, done, total), (row_stage, progress) in evaluated:
        assert row_stage == stage
        assert stage_fraction(stages, stage, progress) == pytest.approx(done / total)
