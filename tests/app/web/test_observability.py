"""Metrics endpoint, HTTP/upload instrumentation, job-store collector and JSON logging."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, File, UploadFile
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.infra.logs import JobIdFilter, configure_json_logging, job_context, json_formatter
from app.web.observability import UNMATCHED_ROUTE, install_observability


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition with prometheus-client's own parser (it fails on a malformed page)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _make_app(**kwargs: object) -> FastAPI:
    app = FastAPI()
    jobs = APIRouter(prefix="/jobs")

    @jobs.get("/{job_id}")
    def get_job(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    @app.post("/harden")
    async def harden(model: UploadFile = File(...)) -> dict[str, int]:
        return {"size": len(await model.read())}

    @app.post("/echo")
    def echo(body: dict[str, int]) -> dict[str, int]:
        return body

    app.include_router(jobs)
    install_observability(app, **kwargs)  # type: ignore[arg-type]
    return app


def test_latency_is_labelled_by_route_template_not_raw_path() -> None:
    client = TestClient(_make_app())
    for job_id in ("a1", "b2", "c3"):
        assert client.get(f"/jobs/{job_id}").status_code == 200
    assert client.get("/nope/123").status_code == 404

    samples = _samples(client.get("/metrics").text)
    key = (
        "harden_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/jobs/{job_id}"), ("status", "200")),
    )
    assert samples[key] == 3
    unmatched = (
        "harden_http_request_duration_seconds_count",
        (("method", "GET"), ("route", UNMATCHED_ROUTE), ("status", "404")),
    )
    assert samples[unmatched] == 1
    # No series carries a concrete job id.
    assert not any("a1" in dict(labels).get("route", "") for _, labels in samples)


def test_upload_sizes_are_measured_for_multipart_bodies_only() -> None:
    client = TestClient(_make_app())
    payload = b"x" * 300_000
    response = client.post("/harden", files={"model": ("m.onnx", payload)})
    assert response.json() == {"size": len(payload)}
    assert client.post("/echo", json={"a": 1}).status_code == 200

    samples = _samples(client.get("/metrics").text)
    count = samples[("harden_upload_size_bytes_count", (("route", "/harden"),))]
    total = samples[("harden_upload_size_bytes_sum", (("route", "/harden"),))]
    assert count == 1
    # The multipart body is the file plus a few hundred bytes of boundaries and headers.
    assert len(payload) <= total < len(payload) + 1024
    assert ("harden_upload_size_bytes_count", (("route", "/echo"),)) not in samples


def test_job_store_numbers_are_read_at_scrape_time() -> None:
    counts = {"queued": 2, "running": 1}
    # An incremental source, as the store reader is: each call hands over the new jobs only.
    pending = [{"load": 0.5, "teacher": 10.0}, {"load": 2.0, "teacher": 100.0}]

    def new_timings() -> list[dict[str, float]]:
        drained = list(pending)
        pending.clear()
        return drained

    client = TestClient(
        _make_app(
            jobs_by_state=lambda: counts,
            stage_timings=new_timings,
            known_states=("queued", "running", "succeeded"),
        )
    )
    samples = _samples(client.get("/metrics").text)
    assert samples[("harden_jobs", (("state", "queued"),))] == 2
    assert samples[("harden_jobs", (("state", "succeeded"),))] == 0
    assert samples[("harden_queue_depth", ())] == 2

    assert samples[("harden_stage_duration_seconds_count", (("stage", "teacher"),))] == 2
    assert samples[("harden_stage_duration_seconds_sum", (("stage", "teacher"),))] == 110.0
    assert (
        samples[("harden_stage_duration_seconds_bucket", (("le", "15.0"), ("stage", "teacher")))]
        == 1
    )
    assert (
        samples[("harden_stage_duration_seconds_bucket", (("le", "120.0"), ("stage", "teacher")))]
        == 2
    )
    assert (
        samples[("harden_stage_duration_seconds_bucket", (("le", "1.0"), ("stage", "load")))] == 1
    )

    # A later scrape sees the store as it is then.
    counts["queued"] = 0
    pending.append({"teacher": 5.0})
    samples = _samples(client.get("/metrics").text)
    assert samples[("harden_queue_depth", ())] == 0
    assert samples[("harden_stage_duration_seconds_count", (("stage", "teacher"),))] == 3


def test_a_failing_job_store_does_not_break_the_metrics_page() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("database is down")

    client = TestClient(_make_app(jobs_by_state=broken))
    client.get("/jobs/1")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(response.text)
    assert ("harden_queue_depth", ()) not in samples
    assert samples[("harden_metrics_store_errors_total", ())] == 1
    assert any(name.startswith("harden_http_request_duration_seconds") for name, _ in samples)


def test_two_apps_in_one_process_keep_separate_registries() -> None:
    first, second = TestClient(_make_app()), TestClient(_make_app())
    first.get("/jobs/x")
    samples = _samples(second.get("/metrics").text)
    assert not any(dict(labels).get("route") == "/jobs/{job_id}" for _, labels in samples)


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(JobIdFilter())
    logger = logging.getLogger("test.observability")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


def test_log_lines_are_json_with_the_job_id_inside_a_job(json_stream: io.StringIO) -> None:
    logger = logging.getLogger("test.observability")
    logger.info("before")
    with job_context("job-42"):
        logger.info("working", extra={"stage": "teacher", "color_message": "\x1b[36mworking"})
        logging.getLogger("test.observability").warning("still working")
    logger.info("after")

    lines = [json.loads(line) for line in json_stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["before", "working", "still working", "after"]
    assert [line["job_id"] for line in lines] == [None, "job-42", "job-42", None]
    assert lines[1]["stage"] == "teacher"
    assert "color_message" not in lines[1]
    assert lines[2]["level"] == "WARNING"
    assert lines[0]["logger"] == "test.observability"
    assert "time" in lines[0]


def test_configure_json_logging_installs_one_handler_however_often_called() -> None:
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    try:
        configure_json_logging("DEBUG")
        handler = configure_json_logging("INFO")
        ours = [h for h in root.handlers if getattr(h, "_harden_json", False)]
        assert ours == [handler]
        assert root.level == logging.INFO
    finally:
        for h in list(root.handlers):
            if h not in before_handlers:
                root.removeHandler(h)
        root.setLevel(before_level)


def test_the_service_app_exports_its_job_table(tmp_path: Path) -> None:
    """The real app factory wires /metrics to the real job store (SQLite, migrated)."""
    from app.infra.db import Job, JobState, utcnow
    from app.infra.settings import Settings
    from app.web.main import create_app

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        artifact_dir=tmp_path / "artifacts",
        upload_dir=tmp_path / "uploads",
        auth="open",
        log_json=False,
    )
    app = create_app(settings)
    with TestClient(app) as client:  # runs the lifespan: migrations
        store = app.state.services.store
        for i, state in enumerate([JobState.queued, JobState.queued, JobState.succeeded]):
            store.create(
                Job(
                    id=f"{i:032x}",
                    owner="anonymous",
                    state=state,
                    spec={},
                    model_sha256="0" * 64,
                    model_format="onnx",
                    timings_s={"teacher": 42.0} if state == JobState.succeeded else None,
                    finished_at=utcnow() if state == JobState.succeeded else None,
                )
            )
        client.get("/healthz")
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)
    assert samples[("harden_jobs", (("state", "queued"),))] == 2
    assert samples[("harden_jobs", (("state", "succeeded"),))] == 1
    assert samples[("harden_jobs", (("state", "failed"),))] == 0
    assert samples[("harden_queue_depth", ())] == 2
    assert samples[("harden_metrics_store_errors_total", ())] == 0
    assert samples[("harden_stage_duration_seconds_count", (("stage", "teacher"),))] == 1
    assert samples[("harden_stage_duration_seconds_sum", (("stage", "teacher"),))] == 42.0
    healthz = (
        "harden_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    assert samples[healthz] == 1


def test_stage_timings_flow_from_the_worker_to_the_metrics(tmp_path: Path) -> None:
    """The worker stores the report's per-stage seconds (a real pipeline run); the API's
    collector reads them."""
    import json

    from app.infra.artifacts import LocalStore
    from app.infra.db import Job, JobState
    from app.infra.migrate import upgrade
    from app.infra.settings import Settings
    from app.infra.store import JobStore
    from app.web.job_metrics import JobStoreCollector, stage_timings_from_store
    from tests.worker.real_pipeline import QUICK_SPEC, digits_torchscript
    from worker.runner import WorkerServices, run_job

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
        artifact_dir=tmp_path / "artifacts",
        work_dir=tmp_path / "work",
        progress_interval_s=0.0,
    )
    upgrade(settings.database_url)
    store = JobStore.from_url(settings.database_url)
    services = WorkerServices(settings, store, LocalStore(settings.artifact_dir))
    job_id = "ab" * 16
    model = tmp_path / "model"
    model.write_bytes(digits_torchscript())
    sha = services.artifacts.put(job_id, "inputs/model", model, move=True)
    store.create(
        Job(
            id=job_id,
            owner="alice",
            state=JobState.queued,
            spec=QUICK_SPEC,
            model_sha256=sha,
            model_format="torchscript",
        )
    )

    assert run_job(services, job_id) == "succeeded"
    stored = store.get(job_id)
    report = json.loads(services.artifacts.local_path(job_id, "report.json").read_text())
    assert stored is not None and stored.timings_s == report["timings_s"]
    timings = stored.timings_s
    assert {"load", "teacher", "student", "export", "report"} <= set(timings)
    assert all(seconds >= 0 for seconds in timings.values())

    reader = stage_timings_from_store(store)
    # Bucket bounds on either side of the measured student seconds: the histogram must put the
    # one observation in the upper bucket only.
    below, above = timings["student"] / 2, timings["student"] * 2 + 1.0
    collector = JobStoreCollector(stage_timings=reader, stage_buckets=(below, above))
    family = next(m for m in collector.collect() if m.name == "harden_stage_duration_seconds")
    values = {(s.name, s.labels.get("stage"), s.labels.get("le")): s.value for s in family.samples}
    assert values[("harden_stage_duration_seconds_count", "student", None)] == 1
    assert values[("harden_stage_duration_seconds_bucket", "student", repr(below))] == 0
    assert values[("harden_stage_duration_seconds_bucket", "student", repr(above))] == 1
    assert values[("harden_stage_duration_seconds_bucket", "student", "+Inf")] == 1
    assert values[("harden_stage_duration_seconds_sum", "teacher", None)] == timings["teacher"]
    assert {stage for _, stage, _ in values} == set(timings)
    store.engine.dispose()


def test_the_store_reader_returns_each_job_once(tmp_path: Path) -> None:
    from datetime import timedelta

    from app.infra.db import Job, JobState, utcnow
    from app.infra.migrate import upgrade
    from app.infra.store import JobStore
    from app.web.job_metrics import stage_timings_from_store

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    store = JobStore.from_url(url)
    now = utcnow()

    def finished(n: int, minutes_ago: float) -> None:
        store.create(
            Job(
                id=f"{n:032x}",
                owner="alice",
                state=JobState.succeeded,
                spec={},
                model_sha256="0" * 64,
                model_format="onnx",
                finished_at=now - timedelta(minutes=minutes_ago),
                timings_s={"teacher": float(n)},
            )
        )

    reader = stage_timings_from_store(store, overlap=timedelta(minutes=10))
    finished(1, 60)
    finished(2, 30)
    assert sorted(t["teacher"] for t in reader()) == [1.0, 2.0]
    assert list(reader()) == []
    # A job committed late by a worker whose clock lags (inside the overlap) is still counted;
    # one older than the overlap was already seen by a full read in a real deployment.
    finished(3, 35)
    finished(4, 0)
    assert sorted(t["teacher"] for t in reader()) == [3.0, 4.0]
    assert list(reader()) == []
    store.engine.dispose()


def test_log_lines_of_a_worker_task_carry_its_job_id(
    json_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Celery task sets the job id around the whole job, for every module's lines."""
    import worker.tasks

    def fake_run_job(services: object, job_id: str, **_: object) -> str:
        logging.getLogger("test.observability").info("inside the pipeline")
        return "gone"  # as for a job deleted meanwhile: no webhook follows

    monkeypatch.setattr(worker.tasks, "run_job", fake_run_job)
    from types import SimpleNamespace

    gone_store = SimpleNamespace(get=lambda job_id: None)
    monkeypatch.setattr(worker.tasks, "services", lambda: SimpleNamespace(store=gone_store))
    result = worker.tasks.harden_job.apply(args=["f" * 32])
    assert result.get() == "gone"
    logging.getLogger("test.observability").info("after the task")

    lines = [json.loads(line) for line in json_stream.getvalue().splitlines()]
    assert [(line["message"], line["job_id"]) for line in lines] == [
        ("inside the pipeline", "f" * 32),
        ("after the task", None),
    ]


def test_with_api_keys_the_metrics_need_a_key_and_hold_totals_only(api, auth, store, settings):
    """Issue 25: /metrics showed every tenant's job counts to anyone. With HARDEN_AUTH=keys it
    needs a key (Prometheus sends one); what it shows is service-wide totals, never a job id,
    owner or key name."""
    from app.infra.api_keys import ApiKeyStore
    from app.infra.db import Job, JobState

    ApiKeyStore(store.engine).create("bob-secret-tenant")
    job_ids = [f"{i:032x}" for i in range(3)]
    for job_id, owner in zip(job_ids, ["alice", "alice", "bob-secret-tenant"], strict=True):
        store.create(
            Job(
                id=job_id,
                owner=owner,
                state=JobState.queued,
                spec={"dataset": "s3://tenant-bucket/private.npz"},
                model_sha256="0" * 64,
                model_format="onnx",
            )
        )
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic eDp5"}):
        refused = api.get("/metrics", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "unauthorized" and refused.json()["hint"]
        assert "harden_jobs" not in refused.text and refused.headers["www-authenticate"] == "Bearer"
    assert "HARDEN_METRICS_OPEN" in api.get("/metrics").json()["hint"]

    page = api.get("/metrics", headers=auth)
    assert page.status_code == 200
    samples = _samples(page.text)
    assert samples[("harden_jobs", (("state", "queued"),))] == 3
    assert samples[("harden_queue_depth", ())] == 3
    for private in [*job_ids, "alice", "bob-secret-tenant", "tenant-bucket", "owner"]:
        assert private not in page.text


@pytest.mark.parametrize(
    ("changes", "open_page"),
    [({"metrics_open": True}, True), ({"auth": "open"}, True), ({}, False)],
)
def test_the_operator_may_serve_the_metrics_without_a_key(settings, changes, open_page):
    from app.web.main import create_app

    with TestClient(create_app(settings.model_copy(update=changes))) as client:
        response = client.get("/metrics")
    assert (response.status_code == 200) is open_page, response.text


def test_job_polls_are_access_logged_at_debug_and_changes_at_info(api, auth, caplog):
    # Every GET /jobs/{id} of a client following a job was an INFO line: a job followed for an
    # hour wrote thousands, burying the submissions, cancels and errors.
    from tests.app.conftest import served
    from tests.app.web.test_jobs import submit

    job_id = submit(api, auth)["id"]

    def access_lines(level: int) -> list[tuple[str, str, int]]:
        caplog.clear()
        caplog.set_level(level)
        with served(api.app) as url, httpx.Client(base_url=url, headers=auth) as client:
            assert client.get("/jobs").status_code == 200
            assert client.get(f"/jobs/{job_id}").status_code == 200
            assert client.get("/jobs?page=2").status_code == 422  # an error: INFO
            assert client.get("/jobs/" + "0" * 32).status_code == 404
            assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
            assert client.get(f"/jobs/{job_id}/events").status_code == 200  # cancelled: ends
            assert client.delete(f"/jobs/{job_id}").status_code == 204
        return [
            (record.args[1], record.args[2], record.levelno)  # type: ignore[index]
            for record in caplog.records
            if record.name == "uvicorn.access"
        ]

    info = access_lines(logging.INFO)
    assert info == [
        ("GET", "/jobs?page=2", logging.INFO),
        ("GET", "/jobs/" + "0" * 32, logging.INFO),
        ("POST", f"/jobs/{job_id}/cancel", logging.INFO),
        ("DELETE", f"/jobs/{job_id}", logging.INFO),
    ]
    job_id = submit(api, auth)["id"]
    debug = access_lines(logging.DEBUG)  # still written when DEBUG is on, as DEBUG
    assert [(method, path) for method, path, level in debug if level == logging.DEBUG] == [
        ("GET", "/jobs"),
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/events"),
    ]
