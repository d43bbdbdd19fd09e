"""Celery tasks: thin adapters around worker.runner (hardening) and worker.webhook."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import httpx
from celery.signals import worker_init, worker_process_init

from app.infra import tracing
from app.infra.artifacts import make_store
from app.infra.db import DATABASE_UNREACHABLE
from app.infra.logs import job_context
from app.infra.queue import RUN_JOB_TASK, WEBHOOK_TASK
from app.infra.settings import get_settings
from app.infra.store import JobStore
from worker.celery_app import celery_app
from worker.runner import WorkerServices, help_audit, run_job
from worker.webhook import WebhookDeliveryError, deliver_webhook

log = logging.getLogger(__name__)
_settings = get_settings()
AUDIT_SHARD_TASK = "harden.audit_shard"


@lru_cache(maxsize=1)
def services() -> WorkerServices:
    """This process's store connections, made on first use (after a prefork fork)."""
    settings = get_settings()

    def send_helpers(job_id: str, count: int) -> None:
        for _ in range(count):
            celery_app.send_task(AUDIT_SHARD_TASK, args=[job_id], queue=settings.queue)

    return WorkerServices(
        settings,
        JobStore.from_url(settings.database_url),
        make_store(settings),
        help_audit=send_helpers,
    )


@worker_init.connect
def _import_the_pipeline(sender: Any = None, **_: Any) -> None:
    # In the worker's main process, before the pool forks: every pool process, the first ones
    # and each replacement of one that died, starts with torch and the core already loaded.
    # Imported in each pool process instead, they took 17 s on a busy host while Celery waits
    # a few seconds for a new process (worker_proc_alive_timeout) before killing it: a dead
    # pool process was never replaced. Nothing here touches CUDA, which must not be initialised
    # before a fork. A worker that runs no jobs (the maintenance queue) skips it.
    # Traces (HARDEN_OTEL_ENDPOINT): installed here, before the pool forks; each pool process's
    # exporter thread restarts after the fork. Nothing when unset.
    tracing.install(get_settings(), "harden-worker")
    if sender is not None and not _consumes(sender, get_settings().queue):
        return
    try:
        import core.pipeline  # noqa: F401
    except ImportError:
        log.exception("core.pipeline cannot be imported; jobs will fail")
    if sender is not None and _solo(sender) and get_settings().contain_models:
        # The solo pool runs tasks in this process and sends no worker_process_init: its fork
        # server starts here, importing torch while the worker starts, or the first job (or
        # the first helper of another job's audit) waits for that import (about 4 s on a busy
        # 2-core machine). Not waited for: a worker that is ready at once costs nothing more.
        from worker.contained import warm_up

        warm_up()


def _solo(worker: Any) -> bool:
    pool = getattr(worker, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    return "solo" in str(name)


def _consumes(worker: Any, queue: str) -> bool:
    """Whether ``worker`` (a Celery WorkController) takes messages from ``queue``."""
    return queue in worker.app.amqp.queues.consume_from


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked child must not share the parent's database connections.
    services.cache_clear()
    if get_settings().contain_models:
        # Starts the fork server of the contained jobs (worker/contained.py), which imports torch
        # in its own process: this pool process reports up at once, its first job does not wait
        # for the import. Not in the main process: a pool process cannot use a fork server it
        # did not start (multiprocessing waits on its own children only).
        from worker.contained import warm_up

        warm_up()


@celery_app.task(
    name=RUN_JOB_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=_settings.job_soft_time_limit_s,
    time_limit=_settings.job_time_limit_s,
    # The job database unreachable: the message would be acknowledged with the job still
    # queued and nothing left to run it. Retried instead (a new message, 5 s growing to a
    # minute apart) for as long as the outage lasts.
    autoretry_for=DATABASE_UNREACHABLE,
    retry_backoff=5,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=None,
)
def harden_job(job_id: str) -> str:
    """Harden the model of job ``job_id`` (its state is re-read from the job store)."""
    current = services()
    # Deployment wiring: every log line written while the job runs carries its id, and so does
    # every span of its trace (app/infra/tracing.py; nothing when tracing is off).
    with job_context(job_id), tracing.job_context(job_id):
        state = run_job(current, job_id)
    job = current.store.get(job_id)
    if job is not None and job.spec.get("webhook_url") and state != "gone":
        celery_app.send_task(WEBHOOK_TASK, args=[job_id], queue=current.settings.queue)
    return state


@celery_app.task(
    name=AUDIT_SHARD_TASK,
    acks_late=True,
    reject_on_worker_lost=True,  # a helper lost with its worker is redelivered
    soft_time_limit=_settings.job_soft_time_limit_s,
    time_limit=_settings.job_time_limit_s,
    autoretry_for=DATABASE_UNREACHABLE,
    retry_backoff=5,
    retry_backoff_max=60,
    max_retries=5,
)
def audit_shard(job_id: str) -> int:
    """Help running job ``job_id``'s audit: compute the shards still unclaimed
    (worker/shards.py). Returns how many were computed here."""
    with job_context(job_id), tracing.job_context(job_id):
        return help_audit(services(), job_id)


@celery_app.task(
    name=WEBHOOK_TASK,
    acks_late=True,
    autoretry_for=(httpx.HTTPError, WebhookDeliveryError),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=_settings.webhook_max_retries,
    soft_time_limit=60,
)
def send_webhook(job_id: str) -> int | None:
    """POST the final job JSON to the job's webhook_url, signed; retried with backoff."""
    current = services()
    with job_context(job_id):
        return deliver_webhook(
            current.store,
            job_id,
            current.settings.webhook_secret,
            allow_private=current.settings.webhook_allow_private,
        )
