"""The production shape on this machine: uvicorn + celery workers, Redis broker, PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
from harden_client import HardenClient

from app.infra.store import JobStore
from core.names import ARTIFACT_NAMES
from core.report.schema import Report
from tests.core.model_files import write_model
from tests.integration.conftest import Cluster, tiny_torchscript, wait_for
from tests.worker.real_pipeline import TINY_EVALUATION

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FAST = {
    "dataset": "builtin:digits",
    "teacher_epochs": 1,
    "student_epochs": 2,
    "batch_size": 64,
    "evaluation": {"enabled": False},
}


def create_key(cluster: Cluster, name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "keys", "create", "--name", name],
        cwd=cluster.workdir,
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def assert_onnx_classifies_digits(path: Path) -> None:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: batch})
    assert logits.shape == (3, 10) and np.isfinite(logits).all()


def read_events(url: str, key: str, job_id: str) -> list[tuple[str, dict]]:
    """The server-sent events of a job, until the stream ends."""
    events = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("GET", f"{url}/jobs/{job_id}/events", headers=headers, timeout=150) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_post_to_downloadable_onnx(redis_cluster: Cluster, tmp_path: Path, webhook_receiver):
    hook_url, received = webhook_receiver
    redis_cluster.env["HARDEN_WEBHOOK_SECRET"] = "it-secret"
    # The receiver listens on 127.0.0.1, which the service refuses unless allowed.
    redis_cluster.env["HARDEN_WEBHOOK_ALLOW_PRIVATE"] = "true"
    redis_cluster.start_api()
    redis_cluster.start_worker("w1")
    key = create_key(redis_cluster, "ci")
    model = tiny_torchscript(tmp_path / "model.pt")
    with HardenClient(redis_cluster.url, key) as client:
        job = client.submit(model, config=FAST | {"webhook_url": hook_url})
        assert job["state"] == "queued"
        events = read_events(redis_cluster.url, key, job["id"])
        done = client.status(job["id"])
        assert done["state"] == "succeeded", (done, redis_cluster.log("w1"))
        assert done["attempts"] == 1 and done["progress"] == 1.0
        assert events[-1] == ("end", {"state": "succeeded"})
        # The whole job first, then only what changes: the spec once.
        assert events[0][0] == "job" and "spec" in events[0][1]
        job_events = [data for name, data in events if name in ("job", "progress")]
        assert [name for name, _ in events[1:-1]] == ["progress"] * (len(job_events) - 1)
        assert not any("spec" in data for data in job_events[1:])
        progress = [data["progress"] for data in job_events]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert {e["state"] for e in job_events} <= {"queued", "running", "succeeded"}
        assert job_events[-1]["state"] == "succeeded"
        stages = {"load", "teacher", "soft_labels", "student", "export", "evaluate", "report"}
        assert {e["stage"] for e in job_events} - {None} <= stages
        files = client.download(job["id"], tmp_path / "out")
    assert_onnx_classifies_digits(files["model.onnx"])
    assert (tmp_path / "out" / "report.json").read_text().startswith("{")
    wait_for(lambda: received, 30, "the webhook", lambda: redis_cluster.log("w1"))
    headers, body = received[0]
    signature = "sha256=" + hmac.new(b"it-secret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Harden-Signature"], signature)
    assert json.loads(body)["state"] == "succeeded" and json.loads(body)["id"] == job["id"]
    store = JobStore.from_url(redis_cluster.env["HARDEN_DATABASE_URL"])
    assert store.get(job["id"]).owner == "ci"
    assert_the_verdict_is_everywhere(redis_cluster, key, tmp_path)


# The spec tests/cli/test_gates.py runs locally: a distilled student that is 'masked'.
AUDITED = FAST | {"teacher_epochs": 0, "student_epochs": 5, "evaluation": TINY_EVALUATION}


def harden(cluster: Cluster, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cluster.workdir,
        env=cluster.env | {"HARDEN_URL": cluster.url, "HARDEN_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_the_verdict_is_everywhere(cluster: Cluster, key: str, tmp_path: Path) -> None:
    """An audited job's verdict wherever a pipeline looks: `harden submit --wait --fail-on` (exit
    3 on 'masked'), its --json, --junit and --sarif, the job resource and the list, the client's
    wait(), `harden status` and `harden jobs`; and `harden download --layout triton`."""
    folder = tmp_path / "audited"
    folder.mkdir()
    model = write_model("torchscript", folder)
    (folder / "spec.json").write_text(json.dumps(AUDITED))
    junit, out, sarif = folder / "harden.xml", folder / "out", folder / "harden.sarif"
    submitted = harden(
        cluster, key, "submit", str(model), "--config", str(folder / "spec.json"), "--wait",
        "--out", str(out), "--fail-on", "masked", "--json", "--junit", str(junit),
        "--sarif", str(sarif),
    )  # fmt: skip
    assert submitted.returncode == 3, (submitted.stderr, cluster.log("w1"))
    summary = json.loads(submitted.stdout)
    verdict = summary["verdict"]
    assert verdict["label"] == "masked" and summary["checks"][0]["passed"] is False
    # The files are downloaded all the same, and the verdict is the report's.
    report = Report.model_validate_json((out / "report.json").read_text())
    assert verdict == report.verdict_summary().model_dump(mode="json")
    assert summary["artifacts"]["model.onnx"] == str(out / "model.onnx")
    cases = list(ET.parse(junit).iter("testcase"))
    assert [c.get("name") for c in cases if c.find("failure") is not None] == ["masked"]
    job_id = summary["job_id"]
    # SARIF: the masked verdict and the tripped gate, as the job's own report.sarif says plus
    # the gate; the job's model card says the verdict.
    results = json.loads(sarif.read_text())["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"HARDEN001", "HARDEN002"}
    stored = json.loads((out / "report.sarif").read_text())["runs"][0]["results"]
    assert [r for r in results if r["ruleId"] != "HARDEN002"] == [
        {**r, "locations": results[0]["locations"]} for r in stored
    ]
    assert "verdict-masked" in (out / "MODEL_CARD.md").read_text()
    # The model as a Triton repository, the same file as model.onnx.
    layout = harden(cluster, key, "download", job_id, "--layout", "triton", "--name", "digits",
                    "--out", str(folder / "repository"))  # fmt: skip
    assert layout.returncode == 0, layout.stderr
    repository = folder / "repository" / "digits"
    assert (repository / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert 'platform: "onnxruntime_onnx"' in (repository / "config.pbtxt").read_text()
    with HardenClient(cluster.url, key) as client:
        assert client.status(job_id)["verdict"] == verdict
        assert client.wait(job_id, timeout_s=5)["verdict"] == verdict
        listed = {job["id"]: job["verdict"] for job in client.list_jobs()["items"]}
        assert listed[job_id] == verdict and len(listed) == 2  # the other job was not audited
        assert [v for v in listed.values() if v != verdict] == [None]
    assert json.loads(harden(cluster, key, "status", job_id).stdout)["verdict"] == verdict
    jobs = harden(cluster, key, "jobs")
    assert jobs.returncode == 0 and "jobs 1-2 of 2" in jobs.stderr, jobs.stderr
    (row,) = [line for line in jobs.stdout.splitlines() if line.startswith(job_id)]
    assert row.split()[1:3] == ["succeeded", "masked"]


def test_sigkilled_worker_job_is_redelivered_and_finishes_once(
    redis_cluster: Cluster, tmp_path: Path
):
    # Redis redelivers the killed worker's job after the visibility timeout, which must outlast
    # the longest job (the settings refuse less): short limits, ample for this small job, keep
    # the wait short. (The solo pool enforces only the soft limit, through the runner.)
    # No reaper runs here (tests/integration/test_faults.py has it): this is Redis' own
    # redelivery, the fallback, which the runner accepts once the dead worker's heartbeat is
    # older than the heartbeat timeout.
    redis_cluster.env |= {
        "HARDEN_JOB_SOFT_TIME_LIMIT_S": "30",
        "HARDEN_JOB_TIME_LIMIT_S": "32",
        "HARDEN_VISIBILITY_TIMEOUT_S": "35",
        "HARDEN_HEARTBEAT_INTERVAL_S": "1",
        "HARDEN_HEARTBEAT_TIMEOUT_S": "5",
    }
    redis_cluster.start_api()
    first = redis_cluster.start_worker("w1")
    key = create_key(redis_cluster, "ci")
    model = tiny_torchscript(tmp_path / "model.pt")
    # About 5 s of student training on this machine: the kill lands well inside it.
    slow = FAST | {"student_epochs": 150, "batch_size": 16}
    with HardenClient(redis_cluster.url, key) as client:
        job = client.submit(model, config=slow)
        wait_for(
            lambda: client.status(job["id"])["stage"] == "student",
            90,
            "job running",
            lambda: redis_cluster.log("w1"),
        )
        running = client.status(job["id"])
        assert running["state"] == "running" and running["attempts"] == 1
        assert running["progress"] < 0.8
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        redis_cluster.start_worker("w2")
        done = client.wait(job["id"], timeout_s=150, poll_s=0.5)
        assert done["state"] == "succeeded", (done, redis_cluster.log("w2"))
        assert time.monotonic() - killed_at >= 4  # redelivered after the visibility timeout
        assert done["attempts"] == 2
        files = client.download(job["id"], tmp_path / "out")
    assert_onnx_classifies_digits(files["model.onnx"])
    store = JobStore.from_url(redis_cluster.env["HARDEN_DATABASE_URL"])
    assert store.count_by_state() == {"succeeded": 1}
    job_dir = Path(redis_cluster.env["HARDEN_ARTIFACT_DIR"]) / job["id"]
    stored = sorted(str(p.relative_to(job_dir)) for p in job_dir.rglob("*") if p.is_file())
    assert stored == sorted(["inputs/model", *ARTIFACT_NAMES])
    assert "harden.run_job" in redis_cluster.log("w2")
