"""A real MLflow tracking server on loopback for the hand-off tests (`mlflow server`, SQLite
backend store, artifacts served by the server from a local folder).

Its start takes tens of seconds on 2 shared cores (imports and database migrations), so
tests/conftest.py starts it in the background as soon as the collected tests are known to need
it, and the ``tracking_uri`` fixture waits for it only when the first such test runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """One `mlflow server` process on a free loopback port, its files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = folder / "mlflow-server.log"
        # The server's background job runner (for GenAI jobs) is not needed: it adds seconds.
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                 "--serve-artifacts", "--artifacts-destination", str(folder / "mlartifacts")],
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its uvicorn child goes with it
            )  # fmt: skip

    def wait_up(self, timeout_s: float = 180.0) -> str:
        """The server's URL once /health answers."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
