"""Job routes with the app in-process: listing, cancel, delete, artifacts, events, health, docs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import get_args

import httpx
from fastapi.testclient import TestClient

from app.infra.artifacts import LocalStore
from app.infra.store import JobStore
from app.web.routes.outputs import ArtifactName
from core.names import ARTIFACT_NAMES
from tests.app.conftest import files_under, onnx_model_bytes, served
from tests.app.web.test_submit import CONFIG, assert_problem, post


def submit(api: TestClient, auth: dict[str, str], **config: object) -> dict:
    response = post(api, auth, onnx_model_bytes(), config=CONFIG | config)
    assert response.status_code == 202, response.text
    return response.json()


def finish(store: JobStore, artifacts: LocalStore, tmp_path: Path, job_id: str) -> dict[str, str]:
    """Do what a worker does at the end of a successful job."""
    contents = {
        "model.onnx": onnx_model_bytes(),
        "report.json": json.dumps({"report_version": "1.0"}).encode(),
        "report.html": b"<html><body>report</body></html>",
    }
    shas = {}
    for name, data in contents.items():
        source = tmp_path / f"out-{name}"
        source.write_bytes(data)
        shas[name] = artifacts.put(job_id, name, source, move=True)
        assert shas[name] == hashlib.sha256(data).hexdigest()
    assert store.mark_running(job_id)
    assert store.record_artifacts(job_id, shas)
    assert store.mark_succeeded(job_id, shas)
    return shas


def test_list_is_newest_first_paginated_and_filtered(api, auth, store):
    ids = [submit(api, auth, seed=i)["id"] for i in range(4)]
    store.request_cancel(ids[0])  # frees its place: a key may have 4 jobs active at once
    ids.append(submit(api, auth, seed=4)["id"])
    page = api.get("/jobs?limit=2", headers=auth).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    assert page["total"] == 5 and page["next"] == "/jobs?limit=2&offset=2"
    last = api.get("/jobs?limit=2&offset=4", headers=auth).json()
    assert [j["id"] for j in last["items"]] == [ids[0]] and last["next"] is None
    cancelled = api.get("/jobs?state=cancelled", headers=auth).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]
    assert_problem(api.get("/jobs?state=bogus", headers=auth), 422, "invalid_request")
    assert_problem(api.get("/jobs?limit=0", headers=auth), 422, "invalid_request")


def test_cancel_queued_job_is_immediate(api, auth):
    job = submit(api, auth)
    cancelled = api.post(f"/jobs/{job['id']}/cancel", headers=auth).json()
    assert cancelled["state"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
    assert cancelled["finished_at"] is not None
    # Cancelling again is harmless.
    assert api.post(f"/jobs/{job['id']}/cancel", headers=auth).json()["state"] == "cancelled"


def test_cancel_running_job_sets_the_flag(api, auth, store):
    job = submit(api, auth)
    store.mark_running(job["id"])
    flagged = api.post(f"/jobs/{job['id']}/cancel", headers=auth).json()
    assert flagged["state"] == "running" and flagged["cancel_requested"] is True
    assert store.cancel_requested(job["id"])


def test_cancel_finished_job_is_409(api, auth, store, settings, tmp_path):
    job = submit(api, auth)
    finish(store, LocalStore(settings.artifact_dir), tmp_path, job["id"])
    assert_problem(api.post(f"/jobs/{job['id']}/cancel", headers=auth), 409, "conflict")


def test_delete_removes_row_and_files(api, auth, store, settings, tmp_path):
    job = submit(api, auth)
    finish(store, LocalStore(settings.artifact_dir), tmp_path, job["id"])
    assert len(files_under(settings.artifact_dir / job["id"])) == 4
    assert api.delete(f"/jobs/{job['id']}", headers=auth).status_code == 204
    assert store.get(job["id"]) is None
    assert files_under(settings.artifact_dir) == []
    assert_problem(api.get(f"/jobs/{job['id']}", headers=auth), 404, "not_found")


def worker_services(settings, store: JobStore):
    from worker.runner import WorkerServices

    quick = settings.model_copy(update={"progress_interval_s": 0.0})
    return WorkerServices(quick, store, LocalStore(settings.artifact_dir))


def test_delete_queued_job_cancels_it_and_removes_row_and_files(api, auth, store, settings):
    from tests.worker.real_pipeline import RecordingPipeline
    from worker.runner import run_job

    job = submit(api, auth)  # queued: the in-memory broker has no worker
    assert [p.name for p in files_under(settings.artifact_dir / job["id"])] == ["model"]
    assert api.delete(f"/jobs/{job['id']}", headers=auth).status_code == 204
    assert store.get(job["id"]) is None
    assert files_under(settings.artifact_dir) == []
    assert_problem(api.get(f"/jobs/{job['id']}", headers=auth), 404, "not_found")
    assert_problem(api.delete(f"/jobs/{job['id']}", headers=auth), 404, "not_found")
    # The job's message is still in the queue: the worker that gets it finds nothing to do.
    pipeline = RecordingPipeline()
    assert run_job(worker_services(settings, store), job["id"], pipeline=pipeline) == "gone"
    assert pipeline.calls == [] and files_under(settings.artifact_dir) == []


def test_delete_running_job_stops_it_and_leaves_no_files(api, auth, store, settings):
    """DELETE while a worker runs the job (the real pipeline, on the submitted ONNX model): 204
    at once; the worker stops at its next step and removes whatever it had stored, so neither a
    row nor a file of the job remains."""
    from tests.worker.real_pipeline import RecordingPipeline
    from worker.runner import run_job

    job = submit(api, auth)
    responses = []

    def delete_mid_training(stage: str, done: int, total: int) -> None:
        if stage == "student" and done == 1:
            running = store.get(job["id"])
            assert running is not None and running.state == "running"
            responses.append(api.delete(f"/jobs/{job['id']}", headers=auth))

    pipeline = RecordingPipeline(hook=delete_mid_training)
    state = run_job(worker_services(settings, store), job["id"], pipeline=pipeline)
    assert [r.status_code for r in responses] == [204]
    assert state == "gone"
    # The core's next cancel check saw the deleted job: no second student step was trained.
    assert pipeline.progress[-1][:2] == ("student", 1) and pipeline.results == []
    assert store.get(job["id"]) is None
    assert files_under(settings.artifact_dir) == []
    assert files_under(settings.work_dir) == []


def test_artifacts_are_409_until_the_job_succeeded(api, auth):
    job = submit(api, auth)
    body = assert_problem(
        api.get(f"/jobs/{job['id']}/model.onnx", headers=auth), 409, "job_not_done"
    )
    assert "queued" in body["detail"]


def test_artifact_of_a_cancelled_job_does_not_say_wait(api, auth):
    # The hint was "wait for state 'succeeded'", which a cancelled job never reaches.
    job = submit(api, auth)
    api.post(f"/jobs/{job['id']}/cancel", headers=auth)
    body = assert_problem(
        api.get(f"/jobs/{job['id']}/report.json", headers=auth), 409, "job_not_done"
    )
    assert body["state"] == "cancelled"
    assert "wait" not in body["hint"] and "submit it again" in body["hint"]


def test_artifacts_download_with_etag_and_content_types(api, auth, store, settings, tmp_path):
    job = submit(api, auth)
    shas = finish(store, LocalStore(settings.artifact_dir), tmp_path, job["id"])
    view = api.get(f"/jobs/{job['id']}", headers=auth).json()
    assert view["state"] == "succeeded" and view["progress"] == 1
    assert {n: a["sha256"] for n, a in view["artifacts"].items()} == shas
    expected_types = {
        "model.onnx": "application/octet-stream",
        "report.json": "application/json",
        "report.html": "text/html",
    }
    for name, content_type in expected_types.items():
        response = api.get(f"/jobs/{job['id']}/{name}", headers=auth)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(content_type)
        assert response.headers["etag"] == f'"{shas[name]}"'
        assert hashlib.sha256(response.content).hexdigest() == shas[name]
        cached = api.get(
            f"/jobs/{job['id']}/{name}", headers=auth | {"If-None-Match": f'"{shas[name]}"'}
        )
        assert cached.status_code == 304 and cached.content == b""
        stale = api.get(f"/jobs/{job['id']}/{name}", headers=auth | {"If-None-Match": '"x"'})
        assert stale.status_code == 200
    assert_problem(api.get(f"/jobs/{job['id']}/secrets.txt", headers=auth), 404, "not_found")


def test_events_stream_until_the_job_ends(api, auth, store, settings, tmp_path):
    job = submit(api, auth)
    store.request_cancel(job["id"])
    with api.stream("GET", f"/jobs/{job['id']}/events", headers=auth) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [block for block in text.split("\n\n") if block.strip()]
    assert events[0].startswith("event: job\ndata: ")
    assert json.loads(events[0].split("data: ", 1)[1])["state"] == "cancelled"
    assert events[-1] == 'event: end\ndata: {"state": "cancelled"}'


def test_events_send_the_spec_once_then_small_progress_events(api, auth, store, settings):
    # Every event repeated the whole job, its ~3 KB spec included, several times a second.
    from app.web import api_docs as docs
    from app.web.schemas import JobProgress

    job_id = submit(api, auth)["id"]
    changes = iter(
        [
            lambda: store.mark_running(job_id),
            lambda: store.set_progress(job_id, "teacher", 0.25),
            lambda: (
                store.record_artifacts(job_id, {}, verdict=docs.SUCCEEDED["verdict"])
                and store.mark_succeeded(job_id, {})
            ),
        ]
    )
    events: list[tuple[str, str]] = []
    with (
        served(api.app) as url,
        httpx.stream("GET", f"{url}/jobs/{job_id}/events", headers=auth, timeout=10) as stream,
    ):
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, line[6:]))
                if name != "end":
                    next(changes, lambda: None)()  # the next change once this one is seen
    names = [name for name, _ in events]
    assert names[0] == "job" and names[-1] == "end" and set(names[1:-1]) == {"progress"}, names
    first = json.loads(events[0][1])
    assert first["spec"] and first["state"] == "queued"
    later = [json.loads(data) for name, data in events if name == "progress"]
    for (_, data), event in zip(events[1:-1], later, strict=True):
        assert "spec" not in event and len(data.encode()) < 1024, data
        JobProgress.model_validate(event)
    assert ("running", "teacher", 0.25) in [(e["state"], e["stage"], e["progress"]) for e in later]
    done = later[-1]
    assert done["state"] == "succeeded" and done["progress"] == 1.0
    assert done["verdict"] == docs.SUCCEEDED["verdict"]
    assert all("verdict" not in event for event in later[:-1])


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "broker": True}


def test_readiness_is_503_when_the_broker_is_down(tmp_path):
    from app.infra.settings import Settings
    from app.web.main import create_app

    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        broker_url="redis://127.0.0.1:1/0",
        artifact_dir=tmp_path / "a",
    )
    with TestClient(create_app(settings)) as client:
        body = assert_problem(client.get("/readyz"), 503, "not_ready")
        assert body["checks"] == {"database": True, "broker": False}


def test_unknown_route_is_problem_json(api):
    body = assert_problem(api.get("/nope"), 404, "not_found")
    assert body["detail"] == "nothing at /nope" and body["hint"]


# Found by schemathesis against a served instance:
def test_an_offset_past_the_limit_is_422_not_500(api, auth):
    # 2**115 overflowed SQLite's integers: a 500.
    assert_problem(api.get(f"/jobs?offset={2**115}", headers=auth), 422, "invalid_request")
    last = api.get("/jobs?offset=1000000000", headers=auth)
    assert last.status_code == 200 and last.json()["items"] == []


def test_unknown_list_parameters_are_422_not_ignored(api, auth):
    # ?page=-1 answered 200 with the first page: a client paging with ?page=N looped forever.
    submit(api, auth)
    for query in ("page=-1", "page=2", "stat=failed", "limit=1&per_page=5"):
        body = assert_problem(api.get(f"/jobs?{query}", headers=auth), 422, "invalid_request")
        unknown = query.split("&")[-1].split("=")[0]
        assert unknown in body["detail"] and "offset" in body["hint"]
        assert body["errors"][0]["field"] == f"query.{unknown}"
    assert api.get("/jobs?state=queued&limit=1&offset=0", headers=auth).status_code == 200


def test_a_wrong_method_is_405_listing_every_method_of_the_path(api, auth):
    job_id = submit(api, auth)["id"]
    # GET matched the download route with artifact 'cancel' (a 422) before.
    cancel = assert_problem(
        api.get(f"/jobs/{job_id}/cancel", headers=auth), 405, "method_not_allowed"
    )
    assert cancel["detail"] == f"GET is not allowed on /jobs/{job_id}/cancel"
    assert api.get(f"/jobs/{job_id}/cancel", headers=auth).headers["allow"] == "POST"
    # GET and DELETE /jobs/{id} are two routes; Starlette's Allow named only the first.
    response = api.request("OPTIONS", f"/jobs/{job_id}", headers=auth)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET"
    assert api.put("/jobs", headers=auth).headers["allow"] == "GET"


def test_openapi_documents_every_endpoint_and_error(api):
    doc = api.get("/openapi.json").json()
    paths = doc["paths"]
    for path in [
        "/harden",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/events",
        "/jobs/{job_id}/{artifact}",
        "/healthz",
        "/readyz",
    ]:
        assert path in paths, path
    upload = paths["/harden"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["model"] and set(form["properties"]) == {
        "model",
        "dataset",
        "config",
    }
    for status in ("401", "409", "413", "422"):
        assert status in upload["responses"]
    assert "Problem" in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["JobOut"].get("examples")
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_the_artifact_path_parameter_takes_exactly_the_core_artifact_names(api):
    assert get_args(ArtifactName) == ARTIFACT_NAMES
    operation = api.get("/openapi.json").json()["paths"]["/jobs/{job_id}/{artifact}"]["get"]
    [parameter] = [p for p in operation["parameters"] if p["name"] == "artifact"]
    assert parameter["schema"]["enum"] == list(ARTIFACT_NAMES)
    assert all(name in operation["summary"] for name in ARTIFACT_NAMES)


def test_an_id_that_is_no_job_id_is_a_404_before_the_store_is_asked(api, auth, store):
    # A NUL byte reached PostgreSQL's driver and became a 500 (issue 15); ids are uuid4 hex.
    job = submit(api, auth)
    for method, url in [
        ("GET", "/jobs/%00"),
        ("GET", "/jobs/abc%00def/report.json"),
        ("POST", "/jobs/%00/cancel"),
        ("DELETE", "/jobs/%00"),
        ("GET", "/jobs/%00/events"),
        ("GET", f"/jobs/{job['id'].upper()}"),
        ("GET", f"/jobs/{job['id']}x"),
        ("GET", "/jobs/" + "%C3%A9" * 32),
    ]:
        assert_problem(api.request(method, url, headers=auth), 404, "not_found")
    assert api.get(f"/jobs/{job['id']}", headers=auth).status_code == 200
