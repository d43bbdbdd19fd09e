"""Job store: every read and state transition of a job, in one place.

Transitions are conditional UPDATEs (``WHERE state IN ...``) so the API and several workers can
race without corrupting a job: a cancelled job is never marked running, a deleted one never
resurrected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.infra.db import (
    TERMINAL_STATES,
    Job,
    JobState,
    make_engine,
    make_sessionmaker,
    utcnow,
)

# The ended states whose files the retention deletes; expired jobs have none left.
EXPIRABLE_STATES = (JobState.succeeded, JobState.failed, JobState.cancelled)
# The states HARDEN_MAX_ACTIVE_JOBS_PER_KEY counts: a job that holds, or waits for, a worker.
ACTIVE_STATES = (JobState.queued, JobState.running)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class JobTimings:
    """The seconds each stage of one finished job took (``jobs.timings_s``)."""

    job_id: str
    finished_at: datetime
    seconds: dict[str, float]


class IdempotencyConflict(Exception):
    """The (owner, Idempotency-Key) pair is already taken: carries the existing job."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


class ActiveJobsQuotaExceeded(Exception):
    """The owner already has ``limit`` queued or running jobs (``active`` of them)."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"{active} active jobs, limit {limit}")
        self.active = active
        self.limit = limit


class JobStore:
    """Typed access to the ``jobs`` table (API keys: app.infra.api_keys)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions: sessionmaker[Session] = make_sessionmaker(engine)

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        return cls(make_engine(url))

    def _session(self) -> Session:
        return self._sessions()

    def ping(self) -> None:
        """Raise when the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # --- jobs -----------------------------------------------------------------------------
    def create(self, job: Job) -> Job:
        """Insert ``job``; raise :class:`IdempotencyConflict` with the existing job when its
        owner already used the same idempotency key."""
        with self._session() as session:
            self._insert(session, job)
        return job

    def create_within_quota(self, job: Job, limit: int) -> Job:
        """Insert ``job`` unless its owner already has ``limit`` queued or running jobs: raise
        :class:`ActiveJobsQuotaExceeded` then (and :class:`IdempotencyConflict` as
        :meth:`create`).

        The count and the insert are one transaction that concurrent submits of one owner take
        in turn, so a burst of them never passes the limit: PostgreSQL serialises them on a
        transaction-scoped advisory lock of the owner (other owners do not wait), SQLite on its
        write lock (``BEGIN IMMEDIATE``: every writer waits, as SQLite's writers always do)."""
        with self._session() as session:
            self._lock_owner(session, job.owner)
            active = self._count_active(session, job.owner)
            if active >= limit:
                session.rollback()
                raise ActiveJobsQuotaExceeded(active, limit)
            self._insert(session, job)
        return job

    def _insert(self, session: Session, job: Job) -> None:
        """Add ``job`` and commit; an idempotency key its owner already used raises
        :class:`IdempotencyConflict` with the existing job."""
        session.add(job)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            existing = self.find_by_idempotency_key(job.owner, job.idempotency_key)
            if existing is None:
                raise
            raise IdempotencyConflict(existing) from None

    def count_active(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running."""
        with self._session() as session:
            return self._count_active(session, owner)

    @staticmethod
    def _count_active(session: Session, owner: str) -> int:
        query = (
            select(func.count())
            .select_from(Job)
            .where(Job.owner == owner, Job.state.in_([str(s) for s in ACTIVE_STATES]))
        )
        return int(session.scalar(query) or 0)

    def _lock_owner(self, session: Session, owner: str) -> None:
        """Begin ``session``'s transaction holding a lock that one owner's submits take in turn."""
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            digest = hashlib.sha256(f"harden.jobs.owner:{owner}".encode()).digest()
            key = int.from_bytes(digest[:8], "big", signed=True)
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        elif dialect == "sqlite":
            # pysqlite opens its transactions lazily, at the first write: open it now, as a
            # writer, so that the count below already holds the database's write lock.
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None when absent or (with ``owner``) someone else's."""
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None or (owner is not None and job.owner != owner):
                return None
            return job

    def find_by_idempotency_key(self, owner: str, key: str | None) -> Job | None:
        if not key:
            return None
        with self._session() as session:
            return session.scalars(
                select(Job).where(Job.owner == owner, Job.idempotency_key == key)
            ).first()

    def list_jobs(
        self, owner: str, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Job], int]:
        """The owner's jobs, newest first, and how many there are in all."""
        with self._session() as session:
            query = select(Job).where(Job.owner == owner)
            count = select(func.count()).select_from(Job).where(Job.owner == owner)
            if state:
                query = query.where(Job.state == state)
                count = count.where(Job.state == state)
            query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
            return list(session.scalars(query)), int(session.scalar(count) or 0)

    def ids_in_state(self, state: str) -> list[str]:
        """Every owner's jobs in ``state``, oldest first (operators' tools, not the API)."""
        with self._session() as session:
            query = select(Job.id).where(Job.state == state).order_by(Job.created_at)
            return list(session.scalars(query))

    def ended_before(self, cutoff: datetime, *, limit: int) -> list[tuple[str, JobState]]:
        """(id, state) of the succeeded, failed or cancelled jobs that finished before
        ``cutoff``, the longest-finished first, at most ``limit`` (the retention's batch)."""
        with self._session() as session:
            rows = session.execute(
                select(Job.id, Job.state)
                .where(
                    Job.state.in_([str(s) for s in EXPIRABLE_STATES]),
                    Job.finished_at.is_not(None),
                    Job.finished_at < cutoff,
                )
                .order_by(Job.finished_at)
                .limit(limit)
            ).all()
        return [(job_id, JobState(state)) for job_id, state in rows]

    def mark_expired(self, job_id: str, ended_as: JobState, error: JobError) -> bool:
        """``ended_as`` -> expired with no artifacts, once the job's files are deleted. False when
        the job changed meanwhile (deleted, or expired by a concurrent pass)."""
        return self._update(
            job_id,
            [ended_as],
            state=JobState.expired,
            artifacts={},
            error_code=error.code,
            error_message=error.message,
            error_hint=error.hint or None,
        )

    def count_by_state(self) -> dict[str, int]:
        """How many jobs each state holds, over every owner (one GROUP BY; states with no job
        are absent)."""
        with self._session() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        return {str(state): int(n) for state, n in rows}

    def finished_job_timings(self, finished_since: datetime | None = None) -> list[JobTimings]:
        """The per-stage seconds the worker stored on finished jobs, with those jobs' ids and end
        times; only the jobs finished at or after ``finished_since`` when given."""
        query = select(Job.id, Job.finished_at, Job.timings_s).where(
            Job.timings_s.is_not(None), Job.finished_at.is_not(None)
        )
        if finished_since is not None:
            query = query.where(Job.finished_at >= finished_since)
        with self._session() as session:
            rows = session.execute(query).all()
        return [
            JobTimings(job_id, finished_at, timings)
            for job_id, finished_at, timings in rows
            if finished_at is not None and isinstance(timings, dict)
        ]

    def _update(
        self,
        job_id: str,
        states: Iterable[str] | None,
        *,
        attempt: int | None = None,
        condition: Any = None,
        **values: Any,
    ) -> bool:
        """One conditional UPDATE of ``job_id``: only from ``states``, only while the job is in
        ``attempt`` (a worker's writes stop counting once its job was handed to another) and
        only where ``condition`` holds."""
        values.setdefault("updated_at", utcnow())
        with self._session() as session:
            stmt = update(Job).where(Job.id == job_id)
            if states is not None:
                stmt = stmt.where(Job.state.in_([str(s) for s in states]))
            if attempt is not None:
                stmt = stmt.where(Job.attempts == attempt)
            if condition is not None:
                stmt = stmt.where(condition)
            result = session.execute(stmt.values(**values))
            session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def mark_running(self, job_id: str, *, stale_before: datetime | None = None) -> int | None:
        """queued -> running, counting the attempt; returns the attempt's number (the worker's
        fencing token), or None when the job is gone, ended, or running under a live worker.

        A job already running is taken over only when its worker is dead, i.e. its last sign of
        life (heartbeat, else its last update) is older than ``stale_before``; without
        ``stale_before`` any running job is taken (one worker, started after a crash)."""
        now = utcnow()
        running = Job.state == JobState.running
        taken_over = running if stale_before is None else and_(running, _stalled(stale_before))
        may_start = or_(Job.state == JobState.queued, taken_over)
        with self._session() as session:
            attempt = session.scalar(
                update(Job)
                .where(Job.id == job_id, may_start)
                .values(
                    state=JobState.running,
                    attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, now),
                    heartbeat_at=now,
                    updated_at=now,
                )
                .returning(Job.attempts)
            )
            session.commit()
        return attempt

    def heartbeat(self, job_id: str, attempt: int, *, now: datetime | None = None) -> bool:
        """Record that the worker of ``attempt`` is alive. False when the job is no longer that
        attempt's to run (ended, deleted, or handed to another worker): the worker must stop."""
        return self._update(
            job_id, [JobState.running], attempt=attempt, heartbeat_at=now or utcnow()
        )

    def stalled_jobs(self, stale_before: datetime) -> list[tuple[str, int]]:
        """(id, attempts) of the running jobs whose last sign of life is older than
        ``stale_before``: their worker died (the reaper's candidates), oldest first."""
        with self._session() as session:
            rows = session.execute(
                select(Job.id, Job.attempts)
                .where(Job.state == JobState.running, _stalled(stale_before))
                .order_by(Job.updated_at)
            ).all()
        return [(job_id, int(attempts)) for job_id, attempts in rows]

    def waiting_since(self, before: datetime) -> list[tuple[str, datetime]]:
        """(id, updated_at) of the queued jobs with no update since ``before``, oldest first: the
        reaper publishes their task again, in case a broker outage lost its message."""
        with self._session() as session:
            rows = session.execute(
                select(Job.id, Job.updated_at)
                .where(Job.state == JobState.queued, Job.updated_at < before)
                .order_by(Job.updated_at)
            ).all()
        return [(job_id, updated_at) for job_id, updated_at in rows]

    def claim_republish(self, job_id: str, updated_at: datetime, now: datetime) -> bool:
        """Mark a queued job's task as published again at ``now`` (its ``updated_at``), only
        while the job is still queued and unchanged since ``updated_at``: of two reapers, one
        claims it; the next claim waits for the bound again."""
        return self._update(
            job_id,
            [JobState.queued],
            condition=Job.updated_at == updated_at,
            updated_at=now,
        )

    def undo_republish(self, job_id: str, updated_at: datetime, claimed_at: datetime) -> bool:
        """Give the claim of :meth:`claim_republish` back when the broker refused the message,
        so that the next reaper pass tries again."""
        return self._update(
            job_id,
            [JobState.queued],
            condition=Job.updated_at == claimed_at,
            updated_at=updated_at,
        )

    def requeue_stalled(self, job_id: str, stale_before: datetime | None) -> bool:
        """running -> queued for a job whose worker died (still stalled now: a heartbeat that
        came back in the meantime wins); without ``stale_before``, any running job. Its
        progress starts again from zero; ``attempts`` keeps counting."""
        return self._update(
            job_id,
            [JobState.running],
            condition=None if stale_before is None else _stalled(stale_before),
            state=JobState.queued,
            stage=None,
            progress=0.0,
        )

    def undo_requeue(self, job_id: str, attempt: int) -> bool:
        """queued -> running again when the requeued job could not be published: it stays
        stalled, so the next reaper pass retries (unless a worker took it meanwhile)."""
        return self._update(job_id, [JobState.queued], attempt=attempt, state=JobState.running)

    def fail_stalled(self, job_id: str, stale_before: datetime, error: JobError) -> bool:
        """running -> failed for a stalled job that used up its attempts."""
        return self._update(
            job_id,
            [JobState.running],
            condition=_stalled(stale_before),
            state=JobState.failed,
            error_code=error.code,
            error_message=error.message,
            error_hint=error.hint or None,
            finished_at=utcnow(),
        )

    def set_progress(
        self, job_id: str, stage: str, progress: float, *, attempt: int | None = None
    ) -> bool:
        return self._update(
            job_id,
            [JobState.running],
            attempt=attempt,
            stage=stage,
            progress=max(0.0, min(1.0, progress)),
        )

    def record_artifacts(
        self,
        job_id: str,
        artifacts: dict[str, str],
        *,
        verdict: dict[str, Any] | None = None,
        mlflow: dict[str, Any] | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Record the output sha256s of a running job, and its verdict, before marking it
        succeeded, so a worker dying in between leaves a job whose redelivery finds its
        artifacts (and verdict) complete. ``mlflow``: the MLflow hand-off's record
        (worker/mlflow_handoff.py), None when the job was not handed over."""
        return self._update(
            job_id,
            [JobState.running],
            attempt=attempt,
            artifacts=artifacts,
            verdict=verdict,
            mlflow=mlflow,
        )

    def record_checkpoint(
        self, job_id: str, name: str, entry: dict[str, Any], *, attempt: int
    ) -> bool:
        """Record checkpoint ``name`` as stored by ``attempt`` (fenced: a worker whose job was
        handed to another records nothing). Read, merged and written under the job's row lock
        where the database has one."""
        with self._session() as session:
            query = select(Job).where(Job.id == job_id, Job.attempts == attempt)
            query = query.where(Job.state == JobState.running)
            job = session.execute(query.with_for_update()).scalar_one_or_none()
            if job is None:
                return False
            job.checkpoints = {**(job.checkpoints or {}), name: {**entry, "attempt": attempt}}
            job.updated_at = utcnow()
            session.commit()
            return True

    def clear_checkpoints(self, job_id: str) -> bool:
        """Forget the job's checkpoints (their files are deleted by the caller)."""
        return self._update(job_id, None, checkpoints=None)

    def record_timings(self, job_id: str, timings_s: dict[str, float]) -> bool:
        """Store the seconds each stage took (deployment wiring: the stage-duration metric)."""
        return self._update(job_id, None, timings_s=timings_s)

    def mark_succeeded(
        self, job_id: str, artifacts: dict[str, str], *, attempt: int | None = None
    ) -> bool:
        return self._update(
            job_id,
            [JobState.running, JobState.queued],
            attempt=attempt,
            state=JobState.succeeded,
            artifacts=artifacts,
            progress=1.0,
            finished_at=utcnow(),
        )

    def mark_failed(self, job_id: str, error: JobError, *, attempt: int | None = None) -> bool:
        return self._update(
            job_id,
            [JobState.running, JobState.queued],
            attempt=attempt,
            state=JobState.failed,
            error_code=error.code,
            error_message=error.message,
            error_hint=error.hint or None,
            finished_at=utcnow(),
        )

    def mark_cancelled(self, job_id: str, *, attempt: int | None = None) -> bool:
        return self._update(
            job_id,
            [JobState.running, JobState.queued],
            attempt=attempt,
            state=JobState.cancelled,
            error_code="cancelled",
            error_message="The job was cancelled on request.",
            finished_at=utcnow(),
        )

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once; flag a running one (its worker stops within a step).
        Returns the job after the change (unchanged when it had already ended)."""
        self.mark_cancelled_if_queued(job_id)
        self._update(job_id, [JobState.running], cancel_requested=True)
        return self.get(job_id)

    def mark_cancelled_if_queued(self, job_id: str) -> bool:
        return self._update(
            job_id,
            [JobState.queued],
            state=JobState.cancelled,
            cancel_requested=True,
            error_code="cancelled",
            error_message="The job was cancelled on request.",
            finished_at=utcnow(),
        )

    def cancel_requested(self, job_id: str) -> bool:
        """True when the job was cancelled or deleted (a deleted job must stop too)."""
        with self._session() as session:
            row = session.execute(
                select(Job.cancel_requested, Job.state).where(Job.id == job_id)
            ).first()
        return row is None or bool(row[0]) or row[1] == JobState.cancelled

    def delete(self, job_id: str) -> bool:
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return False
            session.delete(job)
            session.commit()
            return True


def _stalled(stale_before: datetime) -> ColumnElement[bool]:
    """The job's last sign of life is older than ``stale_before``: its heartbeat, or for a job
    run by a worker without heartbeats (before migration 0003), its last update."""
    return func.coalesce(Job.heartbeat_at, Job.updated_at) < stale_before


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES
