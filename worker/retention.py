"""Retention: delete the files of jobs that ended long ago, keep their rows as history.

A periodic Celery beat task runs :func:`expire_finished_jobs` every
``HARDEN_RETENTION_INTERVAL_S`` seconds. It picks jobs that ended (succeeded, failed, cancelled)
more than ``HARDEN_RETENTION_DAYS`` ago, deletes every file the artifact store holds for them
(outputs and uploaded inputs), then marks them ``expired`` with no artifacts. Files go first: a
crash in between leaves a job that the next run picks up again, never a job that says
"expired" while its files stay on disk forever.

The task goes to its own queue (:data:`MAINTENANCE_QUEUE`) so that it never waits behind an
hours-long hardening job on a GPU worker; ``docker-compose.yml`` runs one small worker with
an embedded beat on that queue.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.infra.artifacts import ArtifactStore, make_store
from app.infra.db import utcnow
from app.infra.settings import Settings, get_settings
from app.infra.store import JobError, JobStore

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

RETENTION_TASK = "harden.retention.expire_finished_jobs"
MAINTENANCE_QUEUE = "harden.maintenance"
EXPIRED = JobError(
    "expired",
    "The job's files were deleted by the retention policy (HARDEN_RETENTION_DAYS).",
    "Submit the job again to recompute its model and report.",
)


def expire_finished_jobs(
    store: JobStore,
    artifacts: ArtifactStore,
    *,
    older_than: timedelta,
    now: datetime | None = None,
    batch_size: int = 200,
) -> list[str]:
    """Delete the files of jobs that ended before ``now - older_than`` and mark them expired.

    Returns the ids of the jobs expired. Safe to run concurrently with itself and with the API:
    each job is marked with a conditional UPDATE on its ended state, and deleting an absent
    file is not an error.
    """
    cutoff = (now or utcnow()) - older_than
    expired: list[str] = []
    while True:
        batch = store.ended_before(cutoff, limit=batch_size)
        if not batch:
            return expired
        for job_id, state in batch:
            artifacts.delete_job(job_id)
            if store.mark_expired(job_id, state, EXPIRED):
                expired.append(job_id)
                log.info("retention: expired job", extra={"job_id": job_id, "was": state})
        if len(batch) < batch_size:
            return expired


def run_retention(settings: Settings) -> list[str]:
    """One retention pass with the service's own job store and artifact store."""
    if settings.retention_days <= 0:
        return []
    store = JobStore.from_url(settings.database_url)
    try:
        return expire_finished_jobs(
            store, make_store(settings), older_than=timedelta(days=settings.retention_days)
        )
    finally:
        store.engine.dispose()


def register_retention(celery_app: Celery, settings: Settings | None = None) -> Any:
    """Define the retention task on ``celery_app`` and schedule it with Celery beat.

    Returns the task (see :func:`schedule_maintenance` for its schedule entry).
    """
    settings = settings or get_settings()

    @celery_app.task(name=RETENTION_TASK, ignore_result=True, acks_late=False)
    def expire_finished_jobs_task() -> int:
        return len(run_retention(get_settings()))

    interval_s = settings.retention_interval_s
    schedule_maintenance(celery_app, "harden-retention", RETENTION_TASK, interval_s)
    return expire_finished_jobs_task


def schedule_maintenance(celery_app: Celery, entry: str, task_name: str, interval_s: float) -> None:
    """Run ``task_name`` every ``interval_s`` seconds (Celery beat) on :data:`MAINTENANCE_QUEUE`;
    a run that waited longer than one interval expires instead of piling up."""
    schedule = dict(celery_app.conf.beat_schedule or {})
    schedule[entry] = {
        "task": task_name,
        "schedule": interval_s,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": interval_s},
    }
    celery_app.conf.beat_schedule = schedule
    routes = celery_app.conf.task_routes
    if routes is None or isinstance(routes, dict):
        # Also routes a manual `.delay()`; a list of routers set elsewhere is left alone (the
        # schedule entry's own queue option still applies).
        celery_app.conf.task_routes = {**(routes or {}), task_name: {"queue": MAINTENANCE_QUEUE}}
