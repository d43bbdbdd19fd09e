"""The registered datasets' queries (issue 13), on a migrated SQLite database and (marked
integration) on a PostgreSQL database of its own: ownership, one row per owner and file, paging,
and no deletion while a queued or running job reads the dataset."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.infra.dataset_store import DatasetExists, DatasetStore
from app.infra.db import Dataset, Job, JobState, utcnow
from app.infra.store import JobError, JobStore
from tests.app.infra.test_store import store  # noqa: F401  (the sqlite / postgresql fixture)


def _dataset(datasets: DatasetStore, owner: str = "alice", sha: str = "a" * 64, **row) -> Dataset:
    fields = {"name": "d", "size_bytes": 3, "file_name": "dataset.npz"} | row
    return datasets.create(Dataset(id=uuid.uuid4().hex, owner=owner, sha256=sha, **fields))


def _job_reading(jobs: JobStore, dataset: Dataset, state: JobState) -> str:
    job_id = uuid.uuid4().hex
    jobs.create(
        Job(
            id=job_id, owner=dataset.owner, state=state, spec={}, model_sha256="m",
            model_format="onnx", dataset_id=dataset.id, dataset_sha256=dataset.sha256,
        )
    )  # fmt: skip
    return job_id


def test_owner_and_file_name_one_dataset(store):  # noqa: F811
    datasets = DatasetStore(store.engine)
    first = _dataset(datasets)
    with pytest.raises(DatasetExists) as same:
        _dataset(datasets)
    assert same.value.dataset.id == first.id
    bobs = _dataset(datasets, owner="bob")  # the same file, another owner: a dataset of its own
    assert datasets.get(first.id, "alice").id == first.id
    assert datasets.get(first.id, "bob") is None and datasets.get(bobs.id, "alice") is None
    assert datasets.find_by_sha256("bob", "a" * 64).id == bobs.id
    assert datasets.find_by_sha256("carol", "a" * 64) is None


def test_pages_newest_first(store):  # noqa: F811
    datasets = DatasetStore(store.engine)
    start = utcnow()
    made = [
        _dataset(datasets, sha=f"{i:064x}", created_at=start + timedelta(seconds=i))
        for i in range(3)
    ]
    page, total = datasets.list_datasets("alice", limit=2, offset=1)
    assert total == 3 and [d.id for d in page] == [made[1].id, made[0].id]
    assert datasets.list_datasets("bob") == ([], 0)


def test_no_deletion_while_a_job_reads_it(store):  # noqa: F811
    datasets = DatasetStore(store.engine)
    dataset = _dataset(datasets)
    queued = _job_reading(store, dataset, JobState.queued)
    running = _job_reading(store, dataset, JobState.running)
    _job_reading(store, dataset, JobState.succeeded)
    outcome = datasets.delete_unused(dataset.id, "alice")
    assert not outcome.deleted and set(outcome.jobs_reading) == {queued, running}
    assert set(datasets.jobs_reading(dataset.id)) == {queued, running}
    assert datasets.delete_unused(dataset.id, "bob").deleted is False  # not bob's
    store.mark_cancelled_if_queued(queued)
    store.mark_failed(running, JobError("internal", "stopped", ""))
    assert datasets.delete_unused(dataset.id, "bob").deleted is False
    assert datasets.delete_unused(dataset.id, "alice").deleted is True
    assert datasets.get(dataset.id) is None
    assert datasets.delete_unused(dataset.id, "alice").deleted is False
