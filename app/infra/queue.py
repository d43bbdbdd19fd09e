"""Sending jobs to the workers by task name: the API never imports the worker (nor torch)."""

from __future__ import annotations

from celery import Celery

from app.infra.settings import Settings, broker_transport_options
from app.infra.tracing import job_context

RUN_JOB_TASK = "harden.run_job"
WEBHOOK_TASK = "harden.send_webhook"


def make_producer(settings: Settings) -> Celery:
    """A Celery app configured only to publish (no result backend: the job table is the truth)."""
    producer = Celery("harden-api", broker=settings.broker_url, set_as_current=False)
    producer.conf.update(
        broker_transport_options=broker_transport_options(settings),
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        broker_connection_retry_on_startup=True,
    )
    return producer


def enqueue_job(producer: Celery, job_id: str, queue: str) -> None:
    """Queue the hardening of ``job_id``; raise when the broker cannot take it. Traced, the
    publish span and the worker's spans carry the job id (app/infra/tracing.py)."""
    with job_context(job_id):
        producer.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, task_id=job_id, retries=0)


def broker_reachable(producer: Celery, timeout_s: float = 2.0) -> bool:
    try:
        with producer.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)
        return True
    except Exception:
        return False
