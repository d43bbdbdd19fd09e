"""Real processes: uvicorn and `celery worker` subprocesses on Redis + PostgreSQL (or the
embedded SQLite broker), each run in its own database / Redis db / queue, removed at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
# A Redis db of its own: some workers here use a short visibility timeout, which must not touch
# other users' unacknowledged messages in db 0. Two test runs at once on one machine give each its
# own db through HARDEN_TEST_REDIS_DB.
REDIS_DB = int(os.environ.get("HARDEN_TEST_REDIS_DB", "13"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """Environment and processes of one test's service."""

    env: dict[str, str]
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    url: str = ""

    def spawn(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            cwd=self.workdir,
            env=self.env | (env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole
        )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        process = self.spawn(
            name, "worker", "--pool", "solo", "--hostname", f"{name}@%h", "--loglevel", "INFO"
        )
        wait_for(
            lambda: " ready." in self.log(name), 60, f"worker {name} ready", lambda: self.log(name)
        )
        return process

    def start_api(self, *extra: str) -> subprocess.Popen[bytes]:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        process = self.spawn("api", "serve", "--port", str(port), *extra)

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"api exited:\n{self.log('api')}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "api up", lambda: self.log("api"))
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(condition, timeout_s: float, what: str, details=lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{details()}")


def base_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARDEN_")}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        HARDEN_ARTIFACT_DIR=str(workdir / "artifacts"),
        HARDEN_UPLOAD_DIR=str(workdir / "uploads"),
        HARDEN_WORK_DIR=str(workdir / "work"),
        HARDEN_PROGRESS_INTERVAL_S="0.2",
        HARDEN_LOG_JSON="false",
        HARDEN_DEVICE="cpu",
        OMP_NUM_THREADS="1",  # two cores shared by everyone
    )
    return env


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"harden_it_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    """Redis broker + PostgreSQL job store, keys auth; processes started by the test."""
    queue = f"harden-it-{uuid.uuid4().hex[:8]}"
    env = base_env(tmp_path) | {
        "HARDEN_DATABASE_URL": pg_url,
        "HARDEN_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "HARDEN_QUEUE": queue,
        "HARDEN_AUTH": "keys",
    }
    cluster = Cluster(env, tmp_path)
    yield cluster
    cluster.stop()
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    # The queue and kombu's bindings of it (exchange routing tables).
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)


def tiny_torchscript(path: Path) -> Path:
    """A TorchScript linear classifier of 1x8x8 digits (untrained: the job trains it)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.jit.save(torch.jit.script(model), str(path))
    return path


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A loopback HTTP server recording the POSTs it gets."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
