"""The reaper: queue again the running jobs whose worker died (their heartbeat stopped), and
publish again the task of a job left queued by a broker outage.

A Celery beat task on the maintenance queue runs :func:`requeue_stalled_jobs` every
``HARDEN_REAPER_INTERVAL_S`` seconds. A job whose heartbeat (:mod:`worker.heartbeat`) is older than
``HARDEN_HEARTBEAT_TIMEOUT_S`` goes back to ``queued`` and its task is published again, so a
worker SIGKILLed mid-job costs about a minute, not the hours of Redis' visibility timeout (which
stays as the fallback when no reaper runs). A job that used up ``HARDEN_MAX_ATTEMPTS`` fails with
``worker_lost`` instead. Each step is a conditional UPDATE on the stalled heartbeat, so a
heartbeat that comes back, a second reaper or a concurrent redelivery cannot make two workers run
the job: the runner takes a running job over only when its heartbeat is stale too.

A queued job's message can be lost too: a worker that had received it when Redis went down
drops it, and Redis gives it back only after the visibility timeout (hours). So a job queued
with no update for ``HARDEN_QUEUED_REPUBLISH_AFTER_S`` (2 x the heartbeat timeout by default)
gets its task published again (:func:`republish_waiting_jobs`). The claim is a conditional
UPDATE of its ``updated_at``, so of two reapers one publishes, and the next republication waits
for the bound again. A job merely waiting behind others in a busy queue gets a duplicate message
that often; the runner drops a delivery of a job already running or ended at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.infra.db import utcnow
from app.infra.queue import enqueue_job
from app.infra.settings import Settings, get_settings
from app.infra.store import JobStore
from worker.retention import schedule_maintenance
from worker.runner import worker_lost_error

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

REAPER_TASK = "harden.reaper.requeue_stalled_jobs"


def requeue_stalled_jobs(
    store: JobStore,
    enqueue: Callable[[str], object],
    *,
    stale_after: timedelta,
    max_attempts: int,
    now: datetime | None = None,
) -> list[str]:
    """Queue again (``enqueue(job_id)``) every running job with no sign of life for
    ``stale_after``; fail those that used up ``max_attempts``. Returns the ids requeued."""
    stale_before = (now or utcnow()) - stale_after
    requeued: list[str] = []
    for job_id, attempts in store.stalled_jobs(stale_before):
        if attempts >= max_attempts:
            if store.fail_stalled(job_id, stale_before, worker_lost_error(attempts)):
                log.warning("reaper: job failed, its worker died %d times", attempts)
            continue
        if not store.requeue_stalled(job_id, stale_before):
            continue  # its heartbeat came back, or another reaper took it
        try:
            enqueue(job_id)
        except Exception:
            # The broker is down: the job stays stalled for the next pass, not queued with no
            # message behind it.
            log.exception("reaper: could not queue job %s again", job_id)
            store.undo_requeue(job_id, attempts)
            continue
        requeued.append(job_id)
        log.warning("reaper: requeued job %s, its worker died (attempt %d)", job_id, attempts)
    return requeued


def republish_waiting_jobs(
    store: JobStore,
    enqueue: Callable[[str], object],
    *,
    waiting_for: timedelta,
    now: datetime | None = None,
) -> list[str]:
    """Publish the task of every job queued with no update for ``waiting_for`` again
    (``enqueue(job_id)``), once per ``waiting_for`` whatever the number of reapers. Returns the
    ids published."""
    now = now or utcnow()
    published: list[str] = []
    for job_id, updated_at in store.waiting_since(now - waiting_for):
        if not store.claim_republish(job_id, updated_at, now):
            continue  # started, cancelled or deleted meanwhile, or another reaper claimed it
        try:
            enqueue(job_id)
        except Exception:
            log.exception("reaper: could not publish queued job %s again", job_id)
            store.undo_republish(job_id, updated_at, now)
            continue
        published.append(job_id)
        log.warning(
            "reaper: published queued job %s again, queued with no update for %.0f s",
            job_id,
            (now - updated_at).total_seconds(),
        )
    return published


def republish_after(settings: Settings) -> timedelta:
    """How long a job stays queued before its task is published again."""
    seconds = settings.queued_republish_after_s or 2 * settings.heartbeat_timeout_s
    return timedelta(seconds=seconds)


def run_reaper(settings: Settings, celery_app: Celery) -> list[str]:
    """One reaper pass with the service's job store, publishing through ``celery_app``: the
    ids of the stalled jobs requeued and of the waiting jobs published again."""
    store = JobStore.from_url(settings.database_url)

    def enqueue(job_id: str) -> None:
        enqueue_job(celery_app, job_id, settings.queue)

    try:
        requeued = requeue_stalled_jobs(
            store,
            enqueue,
            stale_after=timedelta(seconds=settings.heartbeat_timeout_s),
            max_attempts=settings.max_attempts,
        )
        return requeued + republish_waiting_jobs(
            store, enqueue, waiting_for=republish_after(settings)
        )
    finally:
        store.engine.dispose()


def register_reaper(celery_app: Celery, settings: Settings | None = None) -> Any:
    """Define the reaper task on ``celery_app`` and schedule it with Celery beat on the
    maintenance queue. Returns the task."""
    settings = settings or get_settings()

    @celery_app.task(name=REAPER_TASK, ignore_result=True, acks_late=False)
    def requeue_stalled_jobs_task() -> int:
        return len(run_reaper(get_settings(), celery_app))

    schedule_maintenance(celery_app, "harden-reaper", REAPER_TASK, settings.reaper_interval_s)
    return requeue_stalled_jobs_task
