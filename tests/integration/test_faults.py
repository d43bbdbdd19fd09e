"""Faults and hostile input against the production shape (issue 15): uvicorn, Celery workers and
the maintenance worker with its beat (the reaper) as real processes, Redis, PostgreSQL.

Each test prints what it measured (``-s`` shows it): the cases tried and the 5xx seen, the
answers during a database outage. A worker SIGKILLed mid-job (its job running again within
seconds on the other worker, and resuming from its checkpoints): tests/integration/test_resume.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import redis
from harden_client import HardenClient

from app.infra.store import JobStore
from tests.app.conftest import hostile_npz, npz_bytes
from tests.core.archive_files import hostile_archives
from tests.integration.conftest import REDIS_DB, Cluster, free_port, tiny_torchscript, wait_for
from tests.integration.test_redis_postgres import FAST, create_key
from worker.retention import MAINTENANCE_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Seconds: a worker beats every half second, a job with no beat for 3 s is requeued, the reaper
# looks every second. (Production: 10 s, 60 s, 30 s.) Redis' own redelivery stays at its
# default of hours, so a job running again within seconds was the reaper's doing.
FAST_REAPER = {
    "HARDEN_HEARTBEAT_INTERVAL_S": "0.5",
    "HARDEN_HEARTBEAT_TIMEOUT_S": "3",
    "HARDEN_REAPER_INTERVAL_S": "1",
}
# About 5 s of student training on this machine: a kill lands well inside it.
SLOW = FAST | {"student_epochs": 150, "batch_size": 16}


def start_celery(cluster: Cluster, name: str, *args: str) -> subprocess.Popen[bytes]:
    """``celery -A worker.celery_app worker`` itself (``harden worker`` migrates the database
    first, which a worker started during a database outage cannot)."""
    log = (cluster.workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "solo"]
        + ["--hostname", f"{name}@%h", "--without-gossip", "--without-mingle"]
        + ["--loglevel", "INFO", *args],
        cwd=cluster.workdir,
        env=cluster.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster.processes.append(process)
    wait_for(lambda: " ready." in cluster.log(name), 60, f"{name} ready", lambda: cluster.log(name))
    return process


def start_maintenance(cluster: Cluster) -> subprocess.Popen[bytes]:
    """The compose file's maintenance service: a worker on the maintenance queue with beat."""
    schedule = str(cluster.workdir / "celerybeat-schedule")
    return start_celery(
        cluster, "maintenance", "--beat", "--schedule", schedule, "--queues", MAINTENANCE_QUEUE
    )


@pytest.fixture
def reaper_cluster(redis_cluster: Cluster) -> Iterator[Cluster]:
    redis_cluster.env |= FAST_REAPER
    yield redis_cluster
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    for key in client.scan_iter(match=f"*{MAINTENANCE_QUEUE}*"):
        client.delete(key)


def _worker_of(cluster: Cluster, job_id: str, names: tuple[str, ...]) -> str:
    holders = [name for name in names if job_id in cluster.log(name)]
    assert len(holders) == 1, holders
    return holders[0]


def _running_again(client: HardenClient, job_id: str, timeout_s: float) -> float:
    """Seconds until the job runs under a second attempt (or already finished it)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        job = client.status(job_id)
        if job["attempts"] >= 2 and job["state"] in ("running", "succeeded"):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not run again within {timeout_s} s")


def _start_two_workers_and_a_slow_job(
    cluster: Cluster, tmp_path: Path
) -> tuple[HardenClient, str, dict[str, subprocess.Popen[bytes]]]:
    cluster.start_api()
    workers = {name: cluster.start_worker(name) for name in ("w1", "w2")}
    start_maintenance(cluster)
    client = HardenClient(cluster.url, create_key(cluster, "ci"))
    job = client.submit(tiny_torchscript(tmp_path / "model.pt"), config=SLOW)
    wait_for(
        lambda: client.status(job["id"])["stage"] == "student",
        90,
        "job running",
        lambda: cluster.log("w1") + cluster.log("w2"),
    )
    running = client.status(job["id"])
    assert running["state"] == "running" and running["attempts"] == 1
    return client, job["id"], workers


def _finished_once(cluster: Cluster, client: HardenClient, job_id: str) -> dict:
    done = client.wait(job_id, timeout_s=150, poll_s=0.5)
    assert done["state"] == "succeeded", (done, cluster.log("w1"), cluster.log("w2"))
    assert done["attempts"] == 2  # the dead attempt and the one that finished
    store = JobStore.from_url(cluster.env["HARDEN_DATABASE_URL"])
    assert store.count_by_state() == {"succeeded": 1}
    store.engine.dispose()
    return done


@pytest.mark.slow
def test_a_frozen_worker_loses_its_job_and_never_writes_to_it_again(
    reaper_cluster: Cluster, tmp_path
):
    # SIGSTOP: the worker is not dead, only silent (a long GC pause, a partitioned machine).
    # Its job goes to the other worker; woken up, it must see that and stop, not finish the
    # job a second time alongside.
    client, job_id, workers = _start_two_workers_and_a_slow_job(reaper_cluster, tmp_path)
    frozen = _worker_of(reaper_cluster, job_id, tuple(workers))
    os.killpg(workers[frozen].pid, signal.SIGSTOP)
    try:
        _running_again(client, job_id, timeout_s=60)
    finally:
        os.killpg(workers[frozen].pid, signal.SIGCONT)
    _finished_once(reaper_cluster, client, job_id)
    wait_for(
        lambda: "no longer this worker's" in reaper_cluster.log(frozen),
        60,
        "the woken worker gives the job up",
        lambda: reaper_cluster.log(frozen),
    )
    assert client.status(job_id)["attempts"] == 2


# --- a database outage -----------------------------------------------------------------------
@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own (the Debian install's initdb/pg_ctl), on its own
    port, that the test may stop and start."""

    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/harden"

    def run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.data / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    folder = Path(tempfile.mkdtemp(prefix="harden-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PrivatePostgres(found[-1].parent, folder / "data", free_port())
    server.run("initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "--no-sync")
    server.start()
    with psycopg.connect(
        f"postgresql://postgres@127.0.0.1:{server.port}/postgres", autocommit=True
    ) as conn:
        conn.execute("CREATE DATABASE harden")
    yield server
    with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
        server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def test_a_database_outage_answers_503_and_recovers_without_a_restart(
    redis_cluster: Cluster, private_postgres: PrivatePostgres, tmp_path
):
    redis_cluster.env["HARDEN_DATABASE_URL"] = private_postgres.url
    redis_cluster.start_api()
    key = create_key(redis_cluster, "ci")
    model = tiny_torchscript(tmp_path / "model.pt")
    bearer = {"Authorization": f"Bearer {key}"}
    with HardenClient(redis_cluster.url, key) as client:
        before = client.submit(model, config=FAST)["id"]
    statuses: dict[str, int] = {}

    def requests(tag: str) -> dict[str, httpx.Response]:
        with httpx.Client(base_url=redis_cluster.url, headers=bearer, timeout=30) as http:
            answers = {
                "POST /harden": http.post(
                    "/harden",
                    files={"model": ("model.pt", model.read_bytes())},
                    data={"config": json.dumps(FAST)},
                ),
                "GET /jobs/{id}": http.get(f"/jobs/{before}"),
                "GET /jobs": http.get("/jobs"),
                "POST /jobs/{id}/cancel": http.post(f"/jobs/{'0' * 32}/cancel"),
                "GET /readyz": http.get("/readyz"),
                "GET /healthz": http.get("/healthz"),
            }
        statuses.update({f"{tag} {name}": r.status_code for name, r in answers.items()})
        return answers

    private_postgres.stop()
    # A worker started during the outage takes the queued job's message: it must retry, not
    # acknowledge it and leave the job queued with nothing behind it.
    start_celery(redis_cluster, "w1", "--queues", redis_cluster.env["HARDEN_QUEUE"])
    wait_for(
        lambda: "Retry in" in redis_cluster.log("w1"),
        60,
        "the worker retrying the job",
        lambda: redis_cluster.log("w1"),
    )
    down = requests("down:")
    for name in ("POST /harden", "GET /jobs/{id}", "GET /jobs", "POST /jobs/{id}/cancel"):
        body = down[name].json()
        assert down[name].status_code == 503 and body["code"] == "unavailable", (name, body)
        assert "database" in body["detail"] and body["hint"]
    assert down["GET /readyz"].status_code == 503 and down["GET /healthz"].status_code == 200
    assert not any(Path(redis_cluster.env["HARDEN_UPLOAD_DIR"]).rglob("*.*"))

    private_postgres.start()
    up = requests("up:")  # the same API process: no restart
    assert up["POST /harden"].status_code == 202, up["POST /harden"].text
    assert up["GET /jobs/{id}"].status_code == 200 and up["GET /jobs"].json()["total"] == 2
    assert up["GET /readyz"].status_code == 200
    with HardenClient(redis_cluster.url, key) as client:
        done = client.wait(before, timeout_s=150, poll_s=0.5)
    assert done["state"] == "succeeded" and done["attempts"] == 1, redis_cluster.log("w1")
    # Nothing half-written by the refused submission: two jobs, each with its inputs.
    artifacts = Path(redis_cluster.env["HARDEN_ARTIFACT_DIR"])
    assert len([d for d in artifacts.iterdir() if d.is_dir()]) == 2
    print("\n" + "\n".join(f"{name}: {status}" for name, status in statuses.items()))


# --- hostile input -----------------------------------------------------------------------------
def test_hostile_requests_get_4xx_and_leave_nothing(redis_cluster: Cluster, tmp_path):
    redis_cluster.start_api()
    redis_cluster.start_worker("w1")
    key = create_key(redis_cluster, "ci")
    model_bytes = tiny_torchscript(tmp_path / "model.pt").read_bytes()
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(
        base_url=redis_cluster.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:

        def submit(config: dict, dataset: bytes | None = None) -> httpx.Response:
            files = {"model": ("model.pt", model_bytes)}
            if dataset is not None:
                files["dataset"] = ("data", dataset)
            return http.post("/harden", files=files, data={"config": json.dumps(config)})

        for path in ("/jobs/%00", "/jobs/abc%00def/report.json", "/jobs/%00/events"):
            answers[f"GET {path}"] = http.get(path)
        answers["POST /jobs/%00/cancel"] = http.post("/jobs/%00/cancel")
        answers["DELETE /jobs/%00"] = http.delete("/jobs/%00")
        for name, data in (hostile_npz() | hostile_archives()).items():
            answers[f"dataset {name}"] = submit(FAST, data)
        costly = FAST | {"evaluation": {"samples": 10_000, "pgd_steps": 1000}}
        answers["evaluation past the limit"] = submit(costly)
        duplicated = submit(FAST | {"evaluation": {"attacks": ["fgsm_ce"] * 50_000}})
        # Images of three channels for a model of one: only the model can tell; the worker
        # refuses the job while loading, before any training.
        rgb = {
            "x_train": np.random.default_rng(0).random((20, 3, 8, 8), dtype=np.float32),
            "y_train": np.arange(20) % 10,
            "x_test": np.random.default_rng(1).random((10, 3, 8, 8), dtype=np.float32),
            "y_test": np.arange(10),
        }
        mismatch = submit(FAST, npz_bytes(**rgb))

    server_errors = {name: r.status_code for name, r in answers.items() if r.status_code >= 500}
    assert server_errors == {}
    for name, response in answers.items():
        assert response.status_code in (404, 422), (name, response.text)
        body = response.json()
        assert body["detail"] and body["hint"], (name, body)
    assert duplicated.status_code == 202
    assert duplicated.json()["spec"]["evaluation"]["attacks"] == ["fgsm_ce"]
    assert mismatch.status_code == 202
    with HardenClient(redis_cluster.url, key) as client:
        failed = client.wait(mismatch.json()["id"], timeout_s=120, poll_s=0.5)
    assert failed["state"] == "failed" and failed["error"]["code"] == "model_dataset_mismatch"
    assert failed["stage"] == "load", failed  # refused before the teacher trained a step
    store = JobStore.from_url(redis_cluster.env["HARDEN_DATABASE_URL"])
    assert sum(store.count_by_state().values()) == 2  # the refused requests left no job
    store.engine.dispose()
    artifacts = Path(redis_cluster.env["HARDEN_ARTIFACT_DIR"])
    assert len([d for d in artifacts.iterdir() if d.is_dir()]) == 2
    print(f"\nhostile requests: {len(answers)} refused with 404/422, 0 5xx; 2 accepted as meant")


# --- a broker outage that loses a queued job's message ------------------------------------------
@dataclass
class PrivateRedis:
    """A redis-server of the test's own on its own port, without persistence: a restart loses
    every message, as an outage loses one that a worker had received."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 30, "redis-server up")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


def test_a_queued_job_whose_message_was_lost_finishes_after_redis_restarts(
    reaper_cluster: Cluster, private_redis: PrivateRedis, tmp_path
):
    cluster = reaper_cluster
    # Published again 4 s after its last update (production: 2 x the heartbeat timeout).
    cluster.env |= {"HARDEN_BROKER_URL": private_redis.url, "HARDEN_QUEUED_REPUBLISH_AFTER_S": "4"}
    cluster.start_api()
    client = HardenClient(cluster.url, create_key(cluster, "ci"))
    job_id = client.submit(tiny_torchscript(tmp_path / "model.pt"), config=FAST)["id"]
    private_redis.kill()  # the job's message goes with it
    private_redis.start()
    started = time.monotonic()
    start_celery(cluster, "w1", "--queues", cluster.env["HARDEN_QUEUE"])
    start_maintenance(cluster)
    done = client.wait(job_id, timeout_s=90, poll_s=0.5)
    finished_s = time.monotonic() - started
    assert done["state"] == "succeeded", (done, cluster.log("w1"), cluster.log("maintenance"))
    assert done["attempts"] == 1  # run once
    assert f"published queued job {job_id} again" in cluster.log("maintenance")
    print(
        f"\nRedis restarted without the queued job's message: the reaper published it again and "
        f"it succeeded {finished_s:.1f} s after the restart (republication bound 4 s)"
    )
