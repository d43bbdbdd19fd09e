"""Workers lost mid-job (issue 29), against the production shape: uvicorn, Celery workers running
jobs in their confined child, the maintenance worker's reaper, Redis, PostgreSQL.

One cluster, three losses, one job spec, one uninterrupted run to compare with:

1. a helper worker SIGKILLed while it holds a shard of another worker's audit: the job's worker
   computes that shard again, and no other;
2. the job's worker SIGKILLed mid-student: the job runs again on another worker and resumes
   from its checkpoints;
3. the job's worker SIGKILLed mid-audit: the next attempt takes the trainings over whole and
   reuses the shards already done.

Each job ends with the clean accuracies, loss history and audit (every number but seconds, the
verdict included) of the same job never stopped. Prints what it measured (``-s``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from harden_client import HardenClient

from app.infra.shard_store import ShardStore
from app.infra.store import JobStore
from tests.integration.conftest import REDIS_DB, Cluster, tiny_torchscript, wait_for
from tests.integration.test_faults import FAST_REAPER, _running_again, start_maintenance
from tests.integration.test_redis_postgres import create_key
from tests.worker.real_pipeline import without_seconds
from worker.retention import MAINTENANCE_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SHARDS = 24
# A student of about a hundred short epochs (time to stop it mid-way), then an audit of 24 shards
# of 15 samples with PGD at 40 steps (seconds: time for a helper to join, and to stop it).
JOB = {
    "dataset": "builtin:digits",
    "teacher_epochs": 1,
    "student_epochs": 100,
    "batch_size": 16,
    "corruptions": {"enabled": False},
    "evaluation": {
        "attacks": ["fgsm_ce", "pgd_linf_margin", "pgd_l2_margin"],
        "epsilons_linf": [0.1],
        "epsilons_l2": [1.0],
        "samples": 360,
        "samples_slow": 30,
        "pgd_steps": 40,
        "shard_samples": 15,
    },
}


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[Cluster]:
    """The reaper's fast settings (a job whose worker is silent for 3 s is queued again), and a
    checkpoint at every epoch."""
    redis_cluster.env |= FAST_REAPER | {"HARDEN_CHECKPOINT_EVERY_S": "0"}
    yield redis_cluster
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    for key in client.scan_iter(match=f"*{MAINTENANCE_QUEUE}*"):
        client.delete(key)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _parent_of(int(entry.name)) == parent:
                found.append(int(entry.name))
                frontier.append(int(entry.name))
    return found


class _Lab:
    """The cluster, its workers by name, the job client, and the shard claims."""

    def __init__(self, cluster: Cluster, tmp_path: Path) -> None:
        self.cluster, self.tmp_path = cluster, tmp_path
        cluster.start_api()
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        for name in ("w1", "w2"):
            self.add_worker(name)
        start_maintenance(cluster)
        self.client = HardenClient(cluster.url, create_key(cluster, "ci"))
        self.model = tiny_torchscript(tmp_path / "model.pt")
        engine = JobStore.from_url(cluster.env["HARDEN_DATABASE_URL"]).engine
        self.jobs, self.shards = JobStore(engine), ShardStore(engine)

    def add_worker(self, name: str) -> None:
        self.workers[name] = self.cluster.start_worker(name)

    def logs(self) -> str:
        return "".join(self.cluster.log(name) for name in self.workers)

    def submit(self) -> str:
        return str(self.client.submit(self.model, config=JOB)["id"])

    def wait(self, what: str, condition: Callable[[], object]) -> None:
        wait_for(condition, 120, what, self.logs)

    def claimant(self, job_id: str, kind: str, state: str = "claimed") -> str | None:
        for shard in self.shards.states(job_id).values():
            if f":{kind}" in shard.claimant and shard.state == state:
                return shard.claimant
        return None

    def worker_of_pid(self, pid: int) -> str:
        """The worker whose process is ``pid`` (a claimant's process: host:pid:kind:token)."""
        for name, process in self.workers.items():
            if process.pid == pid or pid in _descendants(process.pid):
                return name
        raise AssertionError(f"no worker runs pid {pid}")

    def worker_of_job(self, job_id: str) -> str:
        """The worker running ``job_id``'s attempt now (its process group's children hold it)."""
        attempt = self.jobs.get(job_id)
        assert attempt is not None and attempt.state == "running"
        holders = [name for name in self.workers if job_id in self.cluster.log(name)]
        running = [name for name in holders if self.workers[name].poll() is None]
        assert len(running) == 1, running
        return running[0]

    def helper_holding_a_shard(self, job_id: str) -> str:
        """The worker of a helper that has finished a shard of ``job_id`` and holds one now,
        frozen (SIGSTOP, its job process included) while it does, so that it dies holding it."""
        for _ in range(600):
            self.wait(
                "the helper's first shard done and its next claimed",
                lambda: self.claimant(job_id, "helper", "done") and self.claimant(job_id, "helper"),
            )
            helper = self.claimant(job_id, "helper")
            if helper is None:  # between two shards: look again
                continue
            name = self.worker_of_pid(int(helper.split(":")[1]))
            pids = [self.workers[name].pid, *_descendants(self.workers[name].pid)]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            held = [
                s for s in self.shards.states(job_id).values()
                if s.claimant == helper and s.state == "claimed"
            ]  # fmt: skip
            if len(held) == 1:
                return name
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        raise AssertionError(f"no helper of job {job_id} held a shard")

    def kill(self, name: str) -> None:
        process = self.workers.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def finished(self, job_id: str) -> dict:
        done = self.client.wait(job_id, timeout_s=240, poll_s=0.5)
        assert done["state"] == "succeeded", (done, self.logs())
        path = self.client.download(job_id, self.tmp_path / job_id, ("report.json",))
        return json.loads(Path(path["report.json"]).read_text())


def _same_job(report: dict, uninterrupted: dict) -> None:
    for role in ("uploaded", "teacher", "student"):
        assert (
            report["models"][role]["clean_accuracy"]
            == (uninterrupted["models"][role]["clean_accuracy"])
        )
    assert report["distillation"]["student_loss_history"] == pytest.approx(
        uninterrupted["distillation"]["student_loss_history"], rel=1e-6
    )
    assert without_seconds(report["evaluation"]) == without_seconds(uninterrupted["evaluation"])
    assert report["verdict"]["label"] == uninterrupted["verdict"]["label"]


@pytest.mark.slow
def test_jobs_whose_workers_are_lost_mid_shard_mid_student_and_mid_audit_end_as_if_never_stopped(
    cluster: Cluster, tmp_path: Path
) -> None:
    lab = _Lab(cluster, tmp_path)

    # 1. A helper lost mid-shard. The job's process is stopped (SIGSTOP) once it claims its
    # first shard, so the helper, on the other worker, takes shards from the last down; it is
    # killed once it has finished one and holds the next; then the job's process goes on.
    shared = lab.submit()
    lab.wait("the job's first claim", lambda: lab.claimant(shared, "job"))
    job_claimant = lab.claimant(shared, "job")
    assert job_claimant is not None
    frozen = _descendants(int(job_claimant.split(":")[1]))  # its fork server and job process
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        lab.kill(lab.helper_holding_a_shard(shared))
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    first = lab.finished(shared)
    logs = lab.logs()
    taken_over = re.findall(rf"shard ([0-9]+) of job {shared}: its claimant died", logs)
    assert len(taken_over) == 1, logs  # the killed helper's shard, and no other
    assert "finished after its claim was taken" not in logs  # every helper result was merged
    lab.add_worker("w3")

    # 2. The job's worker lost mid-student, after a student checkpoint was stored: the reaper
    # queues the job again within seconds, and it runs once more, on the other worker.
    student = lab.submit()
    lab.wait(
        "a student checkpoint stored",
        lambda: "train-01-student.safetensors" in ((lab.jobs.get(student).checkpoints) or {}),
    )
    victim = lab.worker_of_job(student)
    lab.kill(victim)
    recovery_s = _running_again(lab.client, student, timeout_s=60)
    second = lab.finished(student)
    assert lab.client.status(student)["attempts"] == 2  # the dead attempt and the one that ended
    assert f"requeued job {student}" in cluster.log("maintenance")
    assert student in "".join(cluster.log(name) for name in lab.workers)  # a survivor ran it
    assert second["resumed_from"]["stage"] == "student" and second["resumed_from"]["attempt"] == 1
    assert not second["resumed_from"]["ended"] and second["resumed_from"]["epoch"] >= 1
    lab.add_worker("w4")

    # 3. The job's worker lost mid-audit, three shards done.
    audit = lab.submit()
    lab.wait(
        "three shards done",
        lambda: sum(s.state == "done" for s in lab.shards.states(audit).values()) >= 3,
    )
    job_claimant = lab.claimant(audit, "job") or lab.claimant(audit, "job", "done")
    assert job_claimant is not None
    lab.kill(lab.worker_of_pid(int(job_claimant.split(":")[1])))
    third = lab.finished(audit)
    assert third["resumed_from"]["ended"] is True  # every training taken over whole
    reused = re.findall(rf"job {audit}: ([0-9]+) of {SHARDS} audit shards already done", lab.logs())
    assert reused and int(reused[0]) >= 3, lab.logs()

    # The same job, never stopped.
    uninterrupted = lab.finished(lab.submit())
    assert uninterrupted.get("resumed_from") is None
    for report in (first, second, third):
        _same_job(report, uninterrupted)
    print(
        f"\nhelper lost mid-shard: shard {taken_over[0]} computed again; job lost mid-student: "
        f"running again {recovery_s:.1f} s after the SIGKILL (heartbeat timeout 3 s, reaper "
        f"every 1 s), resumed after student epoch {second['resumed_from']['epoch']}; job lost "
        f"mid-audit: {reused[0]} of {SHARDS} shards reused"
    )
