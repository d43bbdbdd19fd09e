"""The service's own state: jobs and API keys (SQLAlchemy 2 typed ORM).

This table, not Celery's result backend, is the source of truth for a job's state.
The schema is created by Alembic migrations (app/infra/migrations), never by ``create_all``.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone on the way in)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class JobState(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    # Set by the retention task (worker/retention.py): the job ended long ago and its files
    # were deleted; the row stays as history (and for the stage-duration metrics).
    expired = "expired"


TERMINAL_STATES = frozenset(
    {JobState.succeeded, JobState.failed, JobState.cancelled, JobState.expired}
)


# Job ids are uuid4 hex strings; anything else in a URL is no job (404) and never reaches the
# database (a NUL byte in an id made PostgreSQL's driver raise: a 500).
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    """Whether ``text`` has the form of a job id (it may still name no job)."""
    return _JOB_ID.fullmatch(text) is not None


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One hardening job. Artifacts live in the ArtifactStore under ``<id>/``."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default=JobState.queued, index=True)
    stage: Mapped[str | None] = mapped_column(String(32), default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    model_sha256: Mapped[str] = mapped_column(String(64))
    model_format: Mapped[str] = mapped_column(String(32))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    dataset_name: Mapped[str | None] = mapped_column(String(64), default=None)
    # The registered dataset (POST /datasets) the job reads, for dataset:<id> or
    # dataset:sha256:<hex>; a dataset that queued or running jobs use cannot be deleted.
    dataset_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    # name -> sha256 of every output artifact, filled when the job succeeds.
    artifacts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    error_hint: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # When the worker running the job last said it is alive (worker/heartbeat.py); the reaper
    # (worker/reaper.py) requeues a running job whose heartbeat is older than
    # HARDEN_HEARTBEAT_TIMEOUT_S: its worker died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # stage -> seconds (the report's timings_s), written by the worker when the job succeeds;
    # read by the API's /metrics for the stage-duration histogram (app/web/observability.py).
    timings_s: Mapped[dict[str, float] | None] = mapped_column(JSON, default=None)
    # The audit's verdict with its numbers (core.report.summary.VerdictSummary), written by the
    # worker with the artifacts of a job that succeeded with the evaluation on.
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # The MLflow hand-off (worker/mlflow_handoff.py): run id, registered model version and alias,
    # or the warning saying why it failed; null when the job was not handed over.
    mlflow: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # The checkpoints the job's attempts stored (core/checkpoint.py): file name -> {"attempt",
    # "sha256", "bytes"}, each write fenced by the attempt; a later attempt resumes from them.
    # Emptied (and the files deleted) when the job ends.
    checkpoints: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class AuditShard(Base):
    """One shard of a job's audit (core/audit/shards.py) claimed by a worker process: the job's
    own, or one helping it (worker/shards.py). A claim whose heartbeat is older than the
    heartbeat timeout is taken over; a shard done has its result in the artifact store."""

    __tablename__ = "audit_shards"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # claimed | done
    claimant: Mapped[str] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claims: Mapped[int] = mapped_column(Integer, default=1)  # how often it was (re)claimed
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)


class ApiKey(Base):
    """An API key, stored as the sha256 of the key (the key itself is shown once)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Dataset(Base):
    """A dataset uploaded once (POST /datasets) and checked then; jobs name it
    ``dataset:<id>``. Its file lives in the ArtifactStore under ``<id>/<file_name>`` (ids are
    uuid4 hex, as job ids: the two never collide)."""

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("owner", "sha256", name="uq_datasets_owner_sha256"),
        Index("ix_datasets_owner_created", "owner", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # dataset.npz, dataset.zip, dataset.tar or dataset.tar.gz: what the upload check found.
    file_name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


CONNECT_TIMEOUT_S = 5
# What SQLAlchemy raises when the database cannot be reached (down, restarting, connection lost,
# pool exhausted): the API answers 503, a worker retries the task later. The engine's pre-ping
# reconnects by itself once the database is back (no restart).
DATABASE_UNREACHABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout because the API and the
    worker processes write the same file."""
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # A database host that drops packets would otherwise hold each request for the TCP
        # timeout (minutes) before the API can answer 503; a refused connection fails at once.
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    # pool_pre_ping: connections that died with a database restart are replaced on checkout,
    # so the service recovers by itself when the database is back.
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _ensure_sqlite_dir(url: str) -> None:
    from pathlib import Path

    path = url.split("///", 1)[-1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def make_sessionmaker(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(engine, expire_on_commit=False)
