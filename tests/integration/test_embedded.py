"""`harden serve --embedded`: SQLite job store, SQLite broker, a worker subprocess; nothing else."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from harden_client import HardenClient

from core.names import ARTIFACT_NAMES
from tests.integration.conftest import Cluster, base_env, tiny_torchscript, wait_for
from tests.integration.test_redis_postgres import FAST, assert_onnx_classifies_digits

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def rgb_images_npz() -> bytes:
    """Passes every check the API makes of the file at upload, but holds three-channel images
    for a one-channel model: only the worker, which has the model, can tell."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.random((40, 3, 8, 8), dtype=np.float32),
        y_train=np.arange(40) % 10,
        x_test=rng.random((10, 3, 8, 8), dtype=np.float32),
        y_test=np.arange(10),
    )
    return buffer.getvalue()


@pytest.fixture
def embedded(tmp_path: Path):
    env = base_env(tmp_path)  # no database, broker or auth settings: the embedded defaults
    for name in ("HARDEN_ARTIFACT_DIR", "HARDEN_UPLOAD_DIR", "HARDEN_WORK_DIR"):
        env.pop(name)
    cluster = Cluster(env, tmp_path)
    cluster.start_api("--embedded")
    yield cluster
    cluster.stop()


def test_embedded_mode_runs_a_job_with_nothing_installed(embedded: Cluster, tmp_path: Path):
    model = tiny_torchscript(tmp_path / "model.pt")
    with HardenClient(embedded.url) as client:  # open mode: no key
        job = client.submit(model, config=FAST)
        done = client.wait(job["id"], timeout_s=150, poll_s=0.3)
        assert done["state"] == "succeeded", (done, embedded.log("api"))
        files = client.download(job["id"], tmp_path / "out")
        assert_onnx_classifies_digits(files["model.onnx"])

        (tmp_path / "bad.npz").write_bytes(rgb_images_npz())
        bad = client.submit(model, config=FAST, dataset_file=tmp_path / "bad.npz")
        assert bad["state"] == "queued" and bad["spec"]["dataset"] == "upload"
        failed = client.wait(bad["id"], timeout_s=60, poll_s=0.3)
    assert failed["state"] == "failed" and failed["stage"] == "load"  # before any training
    assert failed["error"]["code"] == "model_dataset_mismatch" and failed["error"]["message"]
    assert_cli_round_trip(embedded, model, tmp_path)
    assert_running_job_cancels(embedded, model)
    # Everything lives under the working directory's var/: SQLite files and artifacts.
    var = tmp_path / "var"
    assert (var / "harden.db").exists() and (var / "broker.db").exists()
    assert (var / "artifacts" / job["id"] / "model.onnx").exists()


def assert_cli_round_trip(cluster: Cluster, model: Path, tmp_path: Path) -> None:
    """`harden submit --wait --out` then `harden status`, as a user would type them."""
    env = cluster.env | {"HARDEN_URL": cluster.url}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "submit",
            str(model),
            "--dataset",
            "builtin:digits",
            "--teacher-epochs",
            "1",
            "--student-epochs",
            "1",
            "--no-evaluation",
            "--wait",
            "--out",
            str(tmp_path / "cli-out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stderr
    assert (tmp_path / "cli-out" / "model.onnx").stat().st_size > 0
    job_id = result.stderr.split("job ", 1)[1].split()[0]
    status = subprocess.run(
        [sys.executable, "-m", "cli.main", "status", job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(status.stdout)["state"] == "succeeded"


def assert_running_job_cancels(cluster: Cluster, model: Path) -> None:
    """A running job stops within a step or so once cancelled, with state 'cancelled'."""
    with HardenClient(cluster.url) as client:
        job = client.submit(model, config=FAST | {"student_epochs": 400, "batch_size": 16})
        wait_for(lambda: client.status(job["id"])["stage"] == "student", 60, "student stage")
        client.cancel(job["id"])
        asked = time.monotonic()
        done = client.wait(job["id"], timeout_s=30, poll_s=0.2)
    assert done["state"] == "cancelled" and done["error"]["code"] == "cancelled"
    assert done["artifacts"] == {}
    assert time.monotonic() - asked < 10


def test_a_job_interrupted_by_a_kill_runs_again_when_the_service_restarts(
    embedded: Cluster, tmp_path: Path
):
    # kombu's SQLite broker never hands back a message whose worker died; the restarted
    # embedded service queues its job again (the Redis deployment has the visibility timeout).
    model = tiny_torchscript(tmp_path / "model.pt")
    long = FAST | {"student_epochs": 60, "batch_size": 16}
    with HardenClient(embedded.url) as client:
        job = client.submit(model, config=long)
        wait_for(lambda: client.status(job["id"])["stage"] == "student", 60, "student stage")
    [api] = embedded.processes
    os.killpg(api.pid, signal.SIGKILL)  # the API and its worker: one process group
    api.wait()
    embedded.processes.clear()

    embedded.start_api("--embedded")
    with HardenClient(embedded.url) as client:
        # Queued again at the restart (the worker may have taken it already).
        assert client.status(job["id"])["state"] in ("queued", "running", "succeeded")
        done = client.wait(job["id"], timeout_s=150, poll_s=0.3)
    assert done["state"] == "succeeded", (done, embedded.log("api"))
    assert done["attempts"] == 2
    assert "queued 1 interrupted job(s) again" in embedded.log("api")
    assert sorted(done["artifacts"]) == sorted(ARTIFACT_NAMES)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited


def test_sigterm_to_the_embedded_service_stops_its_worker(embedded: Cluster):
    # uvicorn re-raises the SIGTERM it handled; with the default action the service died
    # before stopping its worker, which kept running, orphaned, on the broker. A plain `kill`
    # (or a supervisor that signals only the main process) hit exactly that.
    [api] = embedded.processes
    wait_for(lambda: " ready." in embedded.log("api"), 90, "embedded worker", lambda: "")
    children = Path(f"/proc/{api.pid}/task/{api.pid}/children").read_text().split()
    assert children, embedded.log("api")
    os.kill(api.pid, signal.SIGTERM)  # the service process only, not its group
    api.wait(timeout=60)
    try:
        wait_for(
            lambda: not any(_running(int(pid)) for pid in children),
            40,
            "the embedded worker to exit",
            lambda: embedded.log("api")[-2000:],
        )
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing left: the usual case
            os.killpg(api.pid, signal.SIGKILL)  # whatever is left of the group, on failure
