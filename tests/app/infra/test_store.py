"""The job store's queries for retention and metrics, on a migrated SQLite database and (marked
integration) on a PostgreSQL database of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.infra.db import Job, JobState, utcnow
from app.infra.migrate import upgrade
from app.infra.store import EXPIRABLE_STATES, JobError, JobStore

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=utcnow().tzinfo)
EXPIRED = JobError("expired", "files deleted", "submit again")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'jobs.db'}", None
    else:
        name = f"harden_store_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url, drop = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name
    upgrade(url)
    job_store = JobStore.from_url(url)
    yield job_store
    job_store.engine.dispose()
    if drop:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')


def _job(
    store: JobStore,
    state: JobState,
    finished: datetime | None = None,
    *,
    owner: str = "alice",
    **row: Any,
) -> str:
    job_id = uuid.uuid4().hex
    fields: dict[str, Any] = {
        "id": job_id,
        "owner": owner,
        "state": state,
        "spec": {},
        "model_sha256": "0" * 64,
        "model_format": "onnx",
        "artifacts": {"model.onnx": "x"},
        "created_at": NOW - timedelta(days=90),
        "finished_at": finished,
    }
    store.create(Job(**(fields | row)))
    return job_id


def test_ended_before_lists_only_ended_jobs_past_the_cutoff_longest_ended_first(
    store: JobStore,
) -> None:
    cutoff = NOW - timedelta(days=30)
    ended = {
        state: _job(store, state, cutoff - timedelta(days=days))
        for days, state in ((3, JobState.failed), (1, JobState.succeeded), (2, JobState.cancelled))
    }
    _job(store, JobState.succeeded, cutoff)  # ended exactly at the cutoff: kept
    _job(store, JobState.succeeded, cutoff + timedelta(days=1))
    _job(store, JobState.expired, cutoff - timedelta(days=9))  # no files left to delete
    _job(store, JobState.running)
    _job(store, JobState.queued)

    found = store.ended_before(cutoff, limit=10)

    assert found == [
        (ended[JobState.failed], JobState.failed),
        (ended[JobState.cancelled], JobState.cancelled),
        (ended[JobState.succeeded], JobState.succeeded),
    ]
    assert {state for _, state in found} == set(EXPIRABLE_STATES)
    assert store.ended_before(cutoff, limit=2) == found[:2]


def test_mark_expired_clears_the_artifacts_once_and_only_from_the_state_seen(
    store: JobStore,
) -> None:
    job_id = _job(store, JobState.succeeded, NOW)

    assert not store.mark_expired(job_id, JobState.failed, EXPIRED)  # the job changed meanwhile
    assert store.mark_expired(job_id, JobState.succeeded, EXPIRED)
    assert not store.mark_expired(job_id, JobState.succeeded, EXPIRED)  # a concurrent pass

    job = store.get(job_id)
    assert job is not None and job.state == JobState.expired and job.artifacts == {}
    assert (job.error_code, job.error_message, job.error_hint) == (
        "expired",
        "files deleted",
        "submit again",
    )
    assert job.finished_at == NOW  # still says when the job ended
    assert not store.mark_expired(uuid.uuid4().hex, JobState.succeeded, EXPIRED)


def test_count_by_state_counts_every_owner_and_omits_empty_states(store: JobStore) -> None:
    assert store.count_by_state() == {}
    for owner, state in [
        ("alice", JobState.queued),
        ("bob", JobState.queued),
        ("alice", JobState.running),
        ("carol", JobState.failed),
    ]:
        _job(store, state, owner=owner)

    assert store.count_by_state() == {"queued": 2, "running": 1, "failed": 1}


def test_finished_job_timings_are_those_of_finished_jobs_since_the_time_given(
    store: JobStore,
) -> None:
    early = _job(store, JobState.succeeded, NOW - timedelta(hours=2), timings_s={"load": 1.5})
    late = _job(store, JobState.succeeded, NOW, timings_s={"load": 0.5, "student": 30.0})
    _job(store, JobState.succeeded, NOW)  # finished, no timings recorded
    _job(store, JobState.running, timings_s={"load": 2.0})  # not finished

    every = {row.job_id: row for row in store.finished_job_timings()}
    assert set(every) == {early, late}
    assert every[late].seconds == {"load": 0.5, "student": 30.0}
    assert every[late].finished_at == NOW and every[late].finished_at.tzinfo is not None

    since = store.finished_job_timings(NOW - timedelta(hours=1))
    assert [row.job_id for row in since] == [late]
    assert [row.job_id for row in store.finished_job_timings(NOW)] == [late]  # inclusive
    assert store.finished_job_timings(NOW + timedelta(seconds=1)) == []
