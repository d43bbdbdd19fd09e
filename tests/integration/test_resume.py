"""A job whose worker is SIGKILLed mid-training resumes on the other worker from its checkpoint
(issue 29), against the production shape: uvicorn, two Celery workers, the maintenance worker's
reaper, Redis, PostgreSQL, jobs in their confined child.

Prints what it measured (``-s``): the epochs taken over, the seconds from the kill to the job
running again.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from harden_client import HardenClient

from app.infra.shard_store import ShardStore
from app.infra.store import JobStore
from tests.integration.conftest import REDIS_DB, Cluster, tiny_torchscript, wait_for
from tests.integration.test_faults import (
    FAST_REAPER,
    SLOW,
    _finished_once,
    _running_again,
    _start_two_workers_and_a_slow_job,
    _worker_of,
    start_maintenance,
)
from tests.integration.test_redis_postgres import create_key
from tests.integration.test_shards import SHARDED
from tests.worker.real_pipeline import without_seconds
from worker.retention import MAINTENANCE_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _report(client, job_id: str, folder: Path) -> dict:
    path = client.download(job_id, folder / job_id, ("report.json",))["report.json"]
    return json.loads(Path(path).read_text())


@pytest.fixture
def resume_cluster(redis_cluster: Cluster) -> Iterator[Cluster]:
    """The reaper's fast settings, and a checkpoint at every epoch."""
    redis_cluster.env |= FAST_REAPER | {"HARDEN_CHECKPOINT_EVERY_S": "0"}
    yield redis_cluster
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    for key in client.scan_iter(match=f"*{MAINTENANCE_QUEUE}*"):
        client.delete(key)


@pytest.mark.slow
def test_a_job_killed_mid_student_resumes_from_its_checkpoint_and_ends_as_if_never_stopped(
    resume_cluster: Cluster, tmp_path: Path
) -> None:
    client, job_id, workers = _start_two_workers_and_a_slow_job(resume_cluster, tmp_path)
    # Some student epochs done (and stored) before the kill.
    wait_for(
        lambda: client.status(job_id)["progress"] > 0.35,
        90,
        "student under way",
        lambda: resume_cluster.log("w1") + resume_cluster.log("w2"),
    )
    victim = _worker_of(resume_cluster, job_id, tuple(workers))
    os.killpg(workers[victim].pid, signal.SIGKILL)
    workers[victim].wait()
    recovery_s = _running_again(client, job_id, timeout_s=60)
    _finished_once(resume_cluster, client, job_id)
    resumed = _report(client, job_id, tmp_path)
    notes = [n for n in resumed["notes"] if n.startswith("resumed from the checkpoints")]
    assert len(notes) == 1 and "of attempt 1" in notes[0], resumed["notes"]
    assert "student stage" in notes[0]

    # The same job, never stopped, on the surviving worker.
    again = client.submit(tiny_torchscript(tmp_path / "model-again.pt"), config=SLOW)
    done = client.wait(again["id"], timeout_s=150, poll_s=0.5)
    assert done["state"] == "succeeded" and done["attempts"] == 1
    whole = _report(client, again["id"], tmp_path)
    assert not any(n.startswith("resumed") for n in whole["notes"])
    for role in ("uploaded", "teacher", "student"):
        assert resumed["models"][role]["clean_accuracy"] == whole["models"][role]["clean_accuracy"]
    assert resumed["distillation"]["student_loss_history"] == pytest.approx(
        whole["distillation"]["student_loss_history"], rel=1e-6
    )
    print(f"\nSIGKILL mid-student -> running again in {recovery_s:.1f} s; {notes[0]}")


@pytest.mark.slow
def test_a_job_killed_mid_audit_reuses_its_finished_shards_and_ends_as_if_never_stopped(
    resume_cluster: Cluster, tmp_path: Path
) -> None:
    resume_cluster.env |= {"HARDEN_AUDIT_HELPERS": "0"}  # the job's worker alone audits
    resume_cluster.start_api()
    workers = {name: resume_cluster.start_worker(name) for name in ("w1", "w2")}
    start_maintenance(resume_cluster)
    client = HardenClient(resume_cluster.url, create_key(resume_cluster, "ci"))
    model = tiny_torchscript(tmp_path / "model.pt")
    job_id = client.submit(model, config=SHARDED)["id"]
    shards = ShardStore(JobStore.from_url(resume_cluster.env["HARDEN_DATABASE_URL"]).engine)
    wait_for(
        lambda: sum(s.state == "done" for s in shards.states(job_id).values()) >= 3,
        120, "three shards done",
        lambda: resume_cluster.log("w1") + resume_cluster.log("w2"),
    )  # fmt: skip
    victim = _worker_of(resume_cluster, job_id, tuple(workers))
    os.killpg(workers[victim].pid, signal.SIGKILL)
    workers[victim].wait()
    _running_again(client, job_id, timeout_s=60)
    _finished_once(resume_cluster, client, job_id)
    survivor = next(name for name in workers if name != victim)
    reused = re.findall(
        rf"job {job_id}: ([0-9]+) of 24 audit shards already done", resume_cluster.log(survivor)
    )
    assert reused and int(reused[0]) >= 3, resume_cluster.log(survivor)
    resumed = _report(client, job_id, tmp_path)
    assert resumed["resumed_from"]["ended"] is True  # every training was taken over whole

    again = client.submit(model, config=SHARDED)
    assert client.wait(again["id"], timeout_s=150, poll_s=0.5)["state"] == "succeeded"
    whole = _report(client, again["id"], tmp_path)
    assert without_seconds(resumed["evaluation"]) == without_seconds(whole["evaluation"])
    print(f"\nSIGKILL mid-audit -> {reused[0]} of 24 shards reused by attempt 2")
