"""Retention on a real SQLite job store (migrated by Alembic) and a real artifact folder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery

from app.infra.artifacts import LocalStore
from app.infra.db import Job, JobState, utcnow
from app.infra.migrate import upgrade
from app.infra.settings import Settings, get_settings
from app.infra.store import JobStore
from worker.retention import (
    MAINTENANCE_QUEUE,
    RETENTION_TASK,
    expire_finished_jobs,
    register_retention,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=utcnow().tzinfo)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    job_store = JobStore.from_url(url)
    yield job_store
    job_store.engine.dispose()


def _job(
    store: JobStore,
    files: LocalStore,
    state: JobState,
    finished_days_ago: float | None,
    *,
    names: tuple[str, ...] = ("inputs/model", "model.onnx", "report.json"),
) -> str:
    job_id = uuid.uuid4().hex
    finished = NOW - timedelta(days=finished_days_ago) if finished_days_ago is not None else None
    store.create(
        Job(
            id=job_id,
            owner="alice",
            state=state,
            spec={},
            model_sha256="0" * 64,
            model_format="onnx",
            artifacts={n: "x" for n in names if not n.startswith("inputs/")},
            created_at=NOW - timedelta(days=60),
            finished_at=finished,
        )
    )
    for name in names:
        source = files.root.parent / f"src-{job_id}-{name.replace('/', '_')}"
        source.write_bytes(b"payload " + name.encode())
        files.put(job_id, name, source, move=True)
    return job_id


def test_old_finished_jobs_lose_their_files_recent_ones_keep_them(
    store: JobStore, tmp_path: Path
) -> None:
    files = LocalStore(tmp_path / "artifacts")
    old_ok = _job(store, files, JobState.succeeded, 31)
    old_failed = _job(store, files, JobState.failed, 45, names=("inputs/model",))
    old_cancelled = _job(store, files, JobState.cancelled, 30.5)
    recent_ok = _job(store, files, JobState.succeeded, 29)
    running = _job(store, files, JobState.running, None)  # started long ago, still running

    expired = expire_finished_jobs(store, files, older_than=timedelta(days=30), now=NOW)

    assert sorted(expired) == sorted([old_ok, old_failed, old_cancelled])
    for job_id in expired:
        assert not (files.root / job_id).exists()
        job = store.get(job_id)
        assert job is not None
        assert job.state == JobState.expired
        assert job.artifacts == {}
        assert job.error_code == "expired"
    for job_id in (recent_ok, running):
        assert files.job_names(job_id) == ["inputs/model", "model.onnx", "report.json"]
    kept = store.get(recent_ok)
    assert kept is not None and kept.state == JobState.succeeded
    assert kept.artifacts == {"model.onnx": "x", "report.json": "x"}
    # The job row of a running job is untouched.
    still_running = store.get(running)
    assert still_running is not None and still_running.state == JobState.running


def test_a_second_pass_finds_nothing_and_batches_cover_every_job(
    store: JobStore, tmp_path: Path
) -> None:
    files = LocalStore(tmp_path / "artifacts")
    old = [_job(store, files, JobState.succeeded, 40 + i) for i in range(5)]

    first = expire_finished_jobs(store, files, older_than=timedelta(days=30), now=NOW, batch_size=2)
    assert sorted(first) == sorted(old)
    assert expire_finished_jobs(store, files, older_than=timedelta(days=30), now=NOW) == []


def test_the_beat_task_is_scheduled_on_the_maintenance_queue_and_runs(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = LocalStore(tmp_path / "artifacts")
    old = _job(store, files, JobState.succeeded, 400)  # relative to the real clock
    recent_finish = (utcnow() - NOW).total_seconds() / 86400 - 0.5
    recent = _job(store, files, JobState.succeeded, -recent_finish)  # ended 12 h ago

    monkeypatch.setenv("HARDEN_DATABASE_URL", str(store.engine.url))
    monkeypatch.setenv("HARDEN_ARTIFACT_DIR", str(files.root))
    monkeypatch.setenv("HARDEN_RETENTION_DAYS", "7")
    get_settings.cache_clear()
    try:
        celery_app = Celery("test-retention", broker="memory://")
        task = register_retention(celery_app, Settings(retention_interval_s=600))
        entry = celery_app.conf.beat_schedule["harden-retention"]
        assert entry["task"] == RETENTION_TASK == task.name
        assert entry["schedule"] == 600
        assert entry["options"]["queue"] == MAINTENANCE_QUEUE
        assert celery_app.conf.task_routes[RETENTION_TASK] == {"queue": MAINTENANCE_QUEUE}

        assert task.apply().get() == 1
    finally:
        get_settings.cache_clear()
    assert files.job_names(old) == []
    assert files.job_names(recent) == ["inputs/model", "model.onnx", "report.json"]


def test_zero_retention_days_keeps_everything(store: JobStore, tmp_path: Path) -> None:
    from worker.retention import run_retention

    files = LocalStore(tmp_path / "artifacts")
    old = _job(store, files, JobState.succeeded, 4000)
    settings = Settings(
        database_url=str(store.engine.url), artifact_dir=files.root, retention_days=0
    )
    assert run_retention(settings) == []
    assert files.job_names(old) != []
