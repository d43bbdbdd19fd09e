"""Claims on the shards of a job's audit, in the job database (table ``audit_shards``).

A worker process computes a shard only after claiming it here; a claim is one INSERT (the
primary key (job, shard) lets one claimant win) or, for a claim whose claimant stopped
beating, one conditional UPDATE that takes it over. Finished shards are marked done with the
sha256 of their result file (stored in the artifact store by the claimant).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.infra.db import AuditShard, utcnow

CLAIMED = "claimed"
DONE = "done"


@dataclass(frozen=True)
class ShardState:
    state: str
    claimant: str
    heartbeat_at: datetime
    claims: int
    sha256: str | None


class ShardStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    def claim(self, job_id: str, shard: int, claimant: str, *, stale_before: datetime) -> bool:
        """Claim ``shard`` of ``job_id`` for ``claimant``: True when it is now its to compute
        (unclaimed, or claimed by one whose last heartbeat is older than ``stale_before``)."""
        now = utcnow()
        with self._session() as session:
            try:
                session.add(
                    AuditShard(
                        job_id=job_id, shard=shard, state=CLAIMED, claimant=claimant,
                        heartbeat_at=now, claims=1,
                    )
                )  # fmt: skip
                session.commit()
                return True
            except IntegrityError:
                session.rollback()
            result = session.execute(
                update(AuditShard)
                .where(
                    AuditShard.job_id == job_id,
                    AuditShard.shard == shard,
                    AuditShard.state == CLAIMED,
                    AuditShard.heartbeat_at < stale_before,
                )
                .values(claimant=claimant, heartbeat_at=now, claims=AuditShard.claims + 1)
            )
            session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def beat(self, job_id: str, claimant: str) -> None:
        """The claimant is alive: its open claims on the job stay its own."""
        with self._session() as session:
            session.execute(
                update(AuditShard)
                .where(
                    AuditShard.job_id == job_id,
                    AuditShard.claimant == claimant,
                    AuditShard.state == CLAIMED,
                )
                .values(heartbeat_at=utcnow())
            )
            session.commit()

    def finish(self, job_id: str, shard: int, claimant: str, sha256: str) -> bool:
        """Mark ``shard`` done with its result's sha256; only its current claimant may (one
        whose claim was taken over stores a result nobody reads)."""
        with self._session() as session:
            result = session.execute(
                update(AuditShard)
                .where(
                    AuditShard.job_id == job_id,
                    AuditShard.shard == shard,
                    AuditShard.claimant == claimant,
                    AuditShard.state == CLAIMED,
                )
                .values(state=DONE, sha256=sha256, heartbeat_at=utcnow())
            )
            session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def states(self, job_id: str) -> dict[int, ShardState]:
        with self._session() as session:
            rows = session.scalars(select(AuditShard).where(AuditShard.job_id == job_id)).all()
        return {
            row.shard: ShardState(row.state, row.claimant, row.heartbeat_at, row.claims, row.sha256)
            for row in rows
        }

    def forget(self, job_id: str) -> None:
        """The job's audit is over (or the job is gone): its claims go."""
        with self._session() as session:
            session.execute(delete(AuditShard).where(AuditShard.job_id == job_id))
            session.commit()
