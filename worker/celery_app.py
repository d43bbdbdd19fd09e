"""The Celery application of the workers.

Delivery is at-least-once on purpose: a job's message is acknowledged only when the task has
returned (``acks_late``), so a worker killed mid-job (OOM, SIGKILL, lost machine) leaves it to be
redelivered (``task_reject_on_worker_lost``; on Redis after the visibility timeout, long after the
reaper of worker/reaper.py requeued the job whose heartbeat stopped). The task is idempotent and
a job runs under one live worker at a time, so a second delivery is harmless.
"""

from __future__ import annotations

from celery import Celery

from app.infra.logs import connect_worker_logging
from app.infra.settings import Settings, broker_transport_options, get_settings
from worker import healthcheck  # noqa: F401  (registers the healthcheck's command)
from worker.reaper import register_reaper
from worker.retention import register_retention


def make_celery(settings: Settings) -> Celery:
    """A worker-side Celery app for ``settings``."""
    celery = Celery("harden", broker=settings.broker_url, include=["worker.tasks"])
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One job at a time per worker process: a GPU runs one job, and a prefetched second job
        # would wait behind a long first one instead of going to an idle worker.
        worker_prefetch_multiplier=1,
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        # The job table is the source of truth; Celery's results are not kept.
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # A new pool process has this long to say it is up (Celery's default: 4 s). The main
        # process imports torch before forking (worker.tasks), so it needs well under a second.
        worker_proc_alive_timeout=settings.worker_process_start_timeout_s,
    )
    return celery


celery_app = make_celery(get_settings())
# `celery -A worker.celery_app` looks for `app` or `celery` in the module.
app = celery_app

# --- deployment wiring (app/web/observability.py, worker/retention.py, docs/deploy.md) -----------
# On SIGTERM the compose file sets REMAP_SIGTERM=SIGQUIT: Celery's cold shutdown then waits this
# long for the running job, and hands it back to the broker (acks_late: the message is still
# unacknowledged) for another worker instead of being killed mid-job by the orchestrator.
celery_app.conf.worker_soft_shutdown_timeout = 60.0
connect_worker_logging(get_settings())
register_retention(celery_app)
register_reaper(celery_app)
