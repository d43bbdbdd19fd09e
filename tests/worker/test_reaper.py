"""The heartbeat of a running job and the reaper that requeues a job whose worker died, on the
real job store (SQLite), the real runner and the real pipeline (tests/worker/real_pipeline.py).
The SIGKILLed worker on Redis and PostgreSQL is in tests/integration/test_faults.py."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import pytest

from app.infra.db import utcnow
from tests.worker.conftest import queue_job, worker_died
from tests.worker.real_pipeline import RecordingPipeline
from worker.celery_app import celery_app
from worker.heartbeat import Heartbeat
from worker.reaper import (
    REAPER_TASK,
    republish_after,
    republish_waiting_jobs,
    requeue_stalled_jobs,
)
from worker.retention import MAINTENANCE_QUEUE
from worker.runner import WorkerServices, run_job

MINUTE = timedelta(minutes=1)


def reap(services: WorkerServices, enqueue=None) -> tuple[list[str], list[str]]:
    published: list[str] = []
    requeued = requeue_stalled_jobs(
        services.store,
        enqueue or published.append,
        stale_after=MINUTE,
        max_attempts=services.settings.max_attempts,
    )
    return requeued, published


def test_a_job_whose_worker_died_is_requeued_once_and_then_runs(services):
    job_id = queue_job(services)
    worker_died(services, job_id)
    requeued, published = reap(services)
    assert requeued == published == [job_id]
    job = services.store.get(job_id)
    assert job.state == "queued" and job.progress == 0 and job.stage is None
    assert job.attempts == 1  # the dead attempt still counts
    assert reap(services) == ([], [])  # queued now: not published twice
    assert run_job(services, job_id) == "succeeded"
    assert services.store.get(job_id).attempts == 2


def test_a_job_with_a_live_worker_is_left_alone(services):
    job_id = queue_job(services)
    assert services.store.mark_running(job_id) == 1  # heartbeat: now
    assert reap(services) == ([], [])
    # A duplicate delivery (Redis' redelivery, a second requeue) does not start a second run.
    pipeline = RecordingPipeline()
    assert run_job(services, job_id, pipeline=pipeline) == "running"
    assert pipeline.calls == [] and services.store.get(job_id).attempts == 1


def test_a_job_that_used_up_its_attempts_fails_as_worker_lost(services):
    job_id = queue_job(services)
    for _ in range(services.settings.max_attempts):
        worker_died(services, job_id)
    assert reap(services) == ([], [])
    job = services.store.get(job_id)
    assert job.state == "failed" and job.error_code == "worker_lost"
    assert "3 times" in job.error_message and job.error_hint


def test_a_broker_outage_leaves_the_job_for_the_next_pass(services):
    job_id = queue_job(services)
    worker_died(services, job_id)

    def broker_down(job_id: str) -> None:
        raise ConnectionError("broker unreachable")

    assert reap(services, broker_down) == ([], [])
    assert services.store.get(job_id).state == "running"  # not queued with no message behind it
    assert reap(services) == ([job_id], [job_id])


def test_a_worker_whose_job_was_handed_on_stops_and_writes_nothing(services):
    settings = services.settings.model_copy(
        update={"heartbeat_interval_s": 0.02, "heartbeat_timeout_s": 10.0}
    )
    services = replace(services, settings=settings)
    job_id = queue_job(services)

    def taken_over_at_student(stage: str, done: int, total: int) -> None:
        if stage == "student" and done == 2:
            # The reaper judged this worker dead and another worker took the job (attempt 2).
            assert services.store.requeue_stalled(job_id, None)
            assert services.store.mark_running(job_id) == 2
            time.sleep(0.2)  # this worker's next heartbeats find the job no longer its own

    pipeline = RecordingPipeline(hook=taken_over_at_student)
    assert run_job(services, job_id, pipeline=pipeline) == "running"
    job = services.store.get(job_id)
    assert job.state == "running" and job.attempts == 2
    # Its progress writes stopped counting at the takeover, and it stored no outputs.
    assert job.progress == 0 and job.stage is None and job.artifacts == {}
    stage, done, _total = pipeline.progress[-1]
    assert (stage, done) == ("student", 2)
    # Only what it stored while the job was its own: the teacher's checkpoint, under its attempt
    # (the next attempt may resume from it), and nothing of the student it went on training.
    stored = services.artifacts.job_names(job_id)
    assert stored == ["checkpoints/1/train-00-teacher.safetensors", "inputs/model"]
    assert set(job.checkpoints or {}) == {"train-00-teacher.safetensors"}


def test_a_worker_that_cannot_reach_the_store_gives_the_job_up_before_the_reaper_does():
    def unreachable() -> bool:
        raise ConnectionError("database down")

    with Heartbeat(unreachable, interval_s=0.01, timeout_s=0.2) as heartbeat:
        assert not heartbeat.lost
        time.sleep(0.15)  # past half the timeout: the reaper may requeue at 0.2 s
        assert heartbeat.lost and not heartbeat.superseded


def test_a_live_heartbeat_keeps_the_job():
    beats: list[float] = []
    with Heartbeat(lambda: beats.append(time.monotonic()) or True, interval_s=0.01, timeout_s=0.1):
        time.sleep(0.2)
        assert len(beats) >= 5
    assert Heartbeat(lambda: True, interval_s=1, timeout_s=3).lost is False


@pytest.mark.parametrize("entry", ["harden-reaper", "harden-retention"])
def test_maintenance_tasks_are_scheduled_on_the_maintenance_queue(entry):
    schedule = celery_app.conf.beat_schedule[entry]
    assert schedule["options"]["queue"] == MAINTENANCE_QUEUE
    assert celery_app.conf.task_routes[schedule["task"]] == {"queue": MAINTENANCE_QUEUE}
    assert REAPER_TASK in celery_app.tasks


def test_stalled_means_no_sign_of_life_for_the_timeout(services):
    job_id = queue_job(services)
    attempt = services.store.mark_running(job_id)
    assert services.store.stalled_jobs(utcnow() - MINUTE) == []
    services.store.heartbeat(job_id, attempt, now=utcnow() - 2 * MINUTE)
    assert services.store.stalled_jobs(utcnow() - MINUTE) == [(job_id, 1)]
    # A beat of another attempt does not count: that worker lost the job.
    assert not services.store.heartbeat(job_id, attempt + 1)


# --- a queued job whose message a broker outage lost --------------------------------------------
def left_queued(services: WorkerServices, job_id: str, *, for_: timedelta) -> None:
    """The job was queued ``for_`` ago and nothing happened since (its message was lost)."""
    from sqlalchemy import update

    from app.infra.db import Job

    with services.store.engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow() - for_))


def republish(services: WorkerServices, enqueue=None) -> tuple[list[str], list[str]]:
    published: list[str] = []
    done = republish_waiting_jobs(
        services.store, enqueue or published.append, waiting_for=2 * MINUTE
    )
    return done, published


def test_a_job_queued_past_the_bound_is_published_again_once_and_then_runs(services):
    lost = queue_job(services)
    fresh = queue_job(services)
    left_queued(services, lost, for_=3 * MINUTE)
    left_queued(services, fresh, for_=MINUTE)  # within the bound: its message may be on its way
    assert republish(services) == ([lost], [lost])
    # Claimed: neither this reaper's next pass nor a second reaper publishes it again before
    # the bound has passed once more.
    assert republish(services) == ([], [])
    job = services.store.get(lost)
    assert job.state == "queued" and job.attempts == 0
    assert run_job(services, lost) == "succeeded"
    # The original message, delivered late (Redis' visibility timeout), changes nothing.
    pipeline = RecordingPipeline()
    assert run_job(services, lost, pipeline=pipeline) == "succeeded"
    assert pipeline.calls == [] and services.store.get(lost).attempts == 1


def test_two_reapers_racing_for_one_queued_job_publish_it_once(services):
    job_id = queue_job(services)
    left_queued(services, job_id, for_=3 * MINUTE)
    # Both reapers read the job as waiting before either claims it.
    [(found, updated_at)] = services.store.waiting_since(utcnow() - 2 * MINUTE)
    now = utcnow()
    claims = [services.store.claim_republish(found, updated_at, now) for _ in range(2)]
    assert claims == [True, False]


def test_a_queued_job_is_republished_only_while_queued(services):
    cancelled = queue_job(services)
    running = queue_job(services)
    for job_id in (cancelled, running):
        left_queued(services, job_id, for_=3 * MINUTE)
    services.store.request_cancel(cancelled)
    assert services.store.mark_running(running) == 1
    assert republish(services) == ([], [])


def test_a_republication_the_broker_refuses_is_retried_at_the_next_pass(services):
    job_id = queue_job(services)
    left_queued(services, job_id, for_=3 * MINUTE)

    def broker_down(job_id: str) -> None:
        raise ConnectionError("broker unreachable")

    assert republish(services, broker_down) == ([], [])
    assert republish(services) == ([job_id], [job_id])


def test_the_republication_bound_defaults_to_twice_the_heartbeat_timeout(services):
    settings = services.settings
    assert republish_after(settings) == timedelta(seconds=2 * settings.heartbeat_timeout_s)
    chosen = settings.model_copy(update={"queued_republish_after_s": 42.0})
    assert republish_after(chosen) == timedelta(seconds=42)
