"""The worker registers its tasks under the names the API sends them by."""

from __future__ import annotations

from app.infra.queue import RUN_JOB_TASK, WEBHOOK_TASK
from worker import tasks


def test_the_api_task_names_are_the_worker_tasks():
    assert tasks.harden_job.name == RUN_JOB_TASK
    assert tasks.send_webhook.name == WEBHOOK_TASK
