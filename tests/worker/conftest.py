"""Worker fixtures: a migrated SQLite job store, a local artifact folder, queued jobs (a real
TorchScript digits classifier and a spec the real pipeline runs in well under a second)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.infra.artifacts import LocalStore
from app.infra.db import Job, utcnow
from app.infra.migrate import upgrade
from app.infra.settings import Settings
from app.infra.store import JobStore
from tests.worker.real_pipeline import QUICK_SPEC, digits_torchscript
from worker.runner import WorkerServices


@pytest.fixture
def services(tmp_path: Path) -> WorkerServices:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/harden.db",
        broker_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        work_dir=tmp_path / "work",
        progress_interval_s=0.0,
        max_attempts=3,
        # In the test process: these tests steer the core through its own callbacks. The
        # contained child is tested in tests/worker/test_contained.py and tests/integration.
        contain_models=False,
    )
    upgrade(settings.database_url)
    return WorkerServices(
        settings, JobStore.from_url(settings.database_url), LocalStore(settings.artifact_dir)
    )


def queue_job(
    services: WorkerServices,
    spec: dict | None = None,
    *,
    dataset_name: str | None = None,
    **row: Any,
) -> str:
    job_id = uuid.uuid4().hex
    source = Path(services.settings.work_dir).parent / f"model-{job_id}"
    source.write_bytes(digits_torchscript())
    sha = services.artifacts.put(job_id, "inputs/model", source, move=True)
    services.store.create(
        Job(
            id=job_id,
            owner="alice",
            state="queued",
            progress=0.0,
            spec=QUICK_SPEC | (spec or {}),
            model_sha256=sha,
            model_format="torchscript",
            dataset_name=dataset_name,
            artifacts={},
            cancel_requested=False,
            attempts=0,
            **row,
        )
    )
    return job_id


def worker_died(services: WorkerServices, job_id: str) -> int:
    """A worker took ``job_id`` (queued or running) and died: its attempt number, its heartbeat
    an hour old."""
    attempt = services.store.mark_running(job_id)
    assert attempt is not None
    services.store.heartbeat(job_id, attempt, now=utcnow() - timedelta(hours=1))
    return attempt
