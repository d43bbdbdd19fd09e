"""HARDEN_MAX_ACTIVE_JOBS_PER_KEY holds under concurrent submits of one key, on SQLite and on
PostgreSQL: the count and the insert are one transaction that one owner's submits take in turn.
Each submit here is slowed down between its count and its insert, so that without the lock every
one of them would count the same jobs and all would be inserted."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import event

from app.infra.db import Job, JobState
from app.infra.store import ActiveJobsQuotaExceeded, JobStore
from tests.app.infra.test_store import store  # noqa: F401  (the sqlite / postgresql fixture)


def new_job(owner: str) -> Job:
    return Job(
        id=uuid.uuid4().hex,
        owner=owner,
        state=JobState.queued,
        spec={},
        model_sha256="0" * 64,
        model_format="onnx",
        artifacts={},
    )


def slow_counts(jobs: JobStore, seconds: float) -> None:
    """Every COUNT of the jobs table returns ``seconds`` late: the window a race would need."""

    @event.listens_for(jobs.engine, "after_cursor_execute")
    def _pause(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT COUNT"):
            time.sleep(seconds)


def submit_at_once(jobs: JobStore, owners: list[str], limit: int) -> list[str]:
    """``create_within_quota`` for each owner, all started together; what each got."""
    outcomes: list[str] = [""] * len(owners)
    start = threading.Barrier(len(owners))

    def submit(index: int) -> None:
        start.wait()
        try:
            jobs.create_within_quota(new_job(owners[index]), limit)
            outcomes[index] = "created"
        except ActiveJobsQuotaExceeded as refused:
            assert refused.limit == limit and refused.active >= limit
            outcomes[index] = "refused"

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(owners))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_concurrent_submits_of_one_key_never_pass_the_limit(store: JobStore):  # noqa: F811
    store.create(new_job("alice"))
    slow_counts(store, 0.05)
    outcomes = submit_at_once(store, ["alice"] * 6, limit=3)
    assert sorted(outcomes) == ["created"] * 2 + ["refused"] * 4
    assert store.count_active("alice") == 3


def test_other_keys_are_counted_apart(store: JobStore):  # noqa: F811
    slow_counts(store, 0.02)
    outcomes = submit_at_once(store, ["alice", "bob", "carol", "alice", "bob", "carol"], limit=1)
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 3
    assert [store.count_active(owner) for owner in ("alice", "bob", "carol")] == [1, 1, 1]


@pytest.mark.parametrize("ended", [JobState.succeeded, JobState.failed, JobState.cancelled])
def test_only_queued_and_running_jobs_count(store: JobStore, ended: JobState):  # noqa: F811
    running = store.create(new_job("alice")).id
    assert store.mark_running(running) == 1
    finished = new_job("alice")
    finished.state = ended
    store.create(finished)
    assert store.count_active("alice") == 1
    store.create_within_quota(new_job("alice"), limit=2)
    with pytest.raises(ActiveJobsQuotaExceeded):
        store.create_within_quota(new_job("alice"), limit=2)
