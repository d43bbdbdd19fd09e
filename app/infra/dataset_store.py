"""Registered datasets' rows: every read and write of the ``datasets`` table, in one place
(the jobs' SQL is in app/infra/store.py).

A dataset belongs to the API key that uploaded it: every read takes the owner, and another
owner's dataset reads as absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.infra.db import Dataset, Job, JobState, make_sessionmaker

# The job states in which a job still reads its registered dataset.
READING_STATES = (JobState.queued, JobState.running)


class DatasetExists(Exception):
    """The owner registered a file with the same sha256 before: carries that dataset."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset.id)
        self.dataset = dataset


@dataclass(frozen=True)
class DeleteOutcome:
    """What :meth:`DatasetStore.delete_unused` did: ``deleted``; or not, because of the
    ``jobs_reading`` it (queued or running), or because there was no such dataset."""

    deleted: bool
    jobs_reading: tuple[str, ...] = ()


class DatasetStore:
    """Typed access to the ``datasets`` table (on the job store's engine)."""

    def __init__(self, engine: Engine) -> None:
        self._sessions: sessionmaker[Session] = make_sessionmaker(engine)

    def create(self, dataset: Dataset) -> Dataset:
        """Insert ``dataset``; raise :class:`DatasetExists` with the earlier one when its owner
        registered the same file (sha256) before."""
        with self._sessions() as session:
            session.add(dataset)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = self.find_by_sha256(dataset.owner, dataset.sha256)
                if existing is None:
                    raise
                raise DatasetExists(existing) from None
        return dataset

    def get(self, dataset_id: str, owner: str | None = None) -> Dataset | None:
        """The dataset, or None when absent or (with ``owner``) someone else's."""
        with self._sessions() as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None or (owner is not None and dataset.owner != owner):
                return None
            return dataset

    def find_by_sha256(self, owner: str, sha256: str) -> Dataset | None:
        with self._sessions() as session:
            return session.scalars(
                select(Dataset).where(Dataset.owner == owner, Dataset.sha256 == sha256)
            ).first()

    def list_datasets(
        self, owner: str, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Dataset], int]:
        """The owner's datasets, newest first, and how many there are in all."""
        with self._sessions() as session:
            query = (
                select(Dataset)
                .where(Dataset.owner == owner)
                .order_by(Dataset.created_at.desc(), Dataset.id.desc())
                .limit(limit)
                .offset(offset)
            )
            count = select(func.count()).select_from(Dataset).where(Dataset.owner == owner)
            return list(session.scalars(query)), int(session.scalar(count) or 0)

    def jobs_reading(self, dataset_id: str, *, limit: int = 10) -> list[str]:
        """Ids of the queued or running jobs that read the dataset, oldest first."""
        with self._sessions() as session:
            return list(session.scalars(_reading(dataset_id, limit)))

    def delete_unused(self, dataset_id: str, owner: str) -> DeleteOutcome:
        """Delete the owner's dataset row unless a queued or running job reads it.

        The check and the DELETE run in one transaction; a job submitted in the instant
        between them fails in its worker with 'dataset deleted' (worker/dataset_fetch.py)
        rather than read a file that is gone."""
        with self._sessions() as session:
            reading = tuple(session.scalars(_reading(dataset_id, 10)))
            if reading:
                return DeleteOutcome(False, reading)
            result = session.execute(
                delete(Dataset).where(Dataset.id == dataset_id, Dataset.owner == owner)
            )
            session.commit()
            return DeleteOutcome(bool(result.rowcount))  # type: ignore[attr-defined]


def _reading(dataset_id: str, limit: int) -> Select[Any]:
    return (
        select(Job.id)
        .where(Job.dataset_id == dataset_id, Job.state.in_([str(s) for s in READING_STATES]))
        .order_by(Job.created_at)
        .limit(limit)
    )
