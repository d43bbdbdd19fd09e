"""The Python client against the app in-process (Starlette's test transport)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from harden_client import HardenAPIError, HardenClient, JobFailedError

from app.infra.artifacts import LocalStore
from app.web.api_docs import SUCCEEDED
from tests.app.conftest import onnx_model_bytes
from tests.app.web.test_jobs import finish


@pytest.fixture
def client(api, key):
    with HardenClient("http://testserver", key, transport=api._transport) as harden:
        yield harden


def test_submit_status_wait_download(client, store, settings, tmp_path: Path):
    (tmp_path / "m.onnx").write_bytes(onnx_model_bytes())
    job = client.submit(tmp_path / "m.onnx", dataset="builtin:digits", config={"seed": 3})
    assert job["spec"]["seed"] == 3 and job["spec"]["dataset"] == "builtin:digits"
    shas = finish(store, LocalStore(settings.artifact_dir), tmp_path, job["id"])
    seen = []
    done = client.wait(job["id"], on_progress=seen.append, timeout_s=5)
    assert done["state"] == "succeeded" and seen[-1]["state"] == "succeeded"
    paths = client.download(job["id"], tmp_path / "out")
    for name, path in paths.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shas[name]
    assert client.list_jobs()["total"] == 1


def test_problem_becomes_an_exception_with_code_and_hint(client, tmp_path: Path):
    (tmp_path / "m.onnx").write_bytes(onnx_model_bytes())
    with pytest.raises(HardenAPIError) as error:
        client.submit(tmp_path / "m.onnx", dataset="builtin:digits", config={"temperature": -1})
    assert error.value.status == 422 and error.value.code == "invalid_spec"
    assert error.value.hint
    with pytest.raises(HardenAPIError) as missing:
        client.status("0" * 32)
    assert missing.value.status == 404


def test_wait_times_out_and_reports_failures(client, store, tmp_path: Path):
    (tmp_path / "m.onnx").write_bytes(onnx_model_bytes())
    job = client.submit(tmp_path / "m.onnx", dataset="builtin:digits")
    with pytest.raises(TimeoutError):
        client.wait(job["id"], timeout_s=0.1, poll_s=0.05)
    client.cancel(job["id"])
    with pytest.raises(JobFailedError, match="cancelled"):
        client.wait(job["id"], raise_on_failure=True)
    with pytest.raises(HardenAPIError) as not_done:
        client.download(job["id"], tmp_path / "out")
    assert not_done.value.code == "job_not_done"
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_wait_returns_the_verdict_once_the_job_succeeded(client, store, tmp_path: Path):
    (tmp_path / "m.onnx").write_bytes(onnx_model_bytes())
    job = client.submit(tmp_path / "m.onnx", dataset="builtin:digits")
    assert job["verdict"] is None
    # What the worker records at the end of an audited job (tests/worker/test_webhook.py runs
    # the real one): the artifacts' digests and the verdict, then the state.
    assert store.mark_running(job["id"])
    shas = {name: "0" * 64 for name in ("model.onnx", "report.json", "report.html")}
    assert store.record_artifacts(job["id"], shas, verdict=SUCCEEDED["verdict"])
    assert client.status(job["id"])["verdict"] is None  # not before the job succeeded
    assert store.mark_succeeded(job["id"], shas)
    done = client.wait(job["id"], timeout_s=5)
    assert done["verdict"] == SUCCEEDED["verdict"] and done["verdict"]["label"] == "masked"
    assert client.list_jobs()["items"][0]["verdict"] == done["verdict"]


def test_the_wait_callback_sees_a_running_jobs_eta(client, store, tmp_path: Path):
    # A job a minute into its evaluation: the callback gets its eta_s (seconds left at its
    # measured pace), as `harden submit --wait` shows it beside its bar.
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from app.infra.db import Job, utcnow
    from core.contract.job_plan import overall_progress, progress_stages
    from core.contract.spec import HardenSpec

    (tmp_path / "m.onnx").write_bytes(onnx_model_bytes())
    job = client.submit(tmp_path / "m.onnx", dataset="builtin:digits")
    assert store.mark_running(job["id"])
    stages = progress_stages(HardenSpec.model_validate(job["spec"]))
    store.set_progress(job["id"], "evaluate", overall_progress(stages, "evaluate", 0.5) or 0.0)
    with Session(store.engine) as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.started_at = utcnow() - timedelta(seconds=60)
        session.commit()
    seen: list[dict] = []
    with pytest.raises(TimeoutError):
        client.wait(job["id"], on_progress=seen.append, timeout_s=0.05, poll_s=0.05)
    assert seen and seen[-1]["stage"] == "evaluate" and 0 < seen[-1]["eta_s"] < 600
