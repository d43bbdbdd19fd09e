"""The OpenAPI document: every operation, response, parameter and field described; errors as
problem+json with examples whose codes and statuses are the service's own; examples that
validate against their schemas, and error examples that are what the app really answers."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from app.infra.artifacts import LocalStore
from app.infra.settings import Settings
from app.infra.store import JobError, JobStore
from app.web import errors as app_errors
from app.web.main import create_app
from app.web.problem_examples import (
    COSTLY_CONFIG,
    DEFAULT_LIMIT,
    EXAMPLE_DATASET_ID,
    EXAMPLE_JOB_ID,
    EXAMPLES,
    LONG_TRAINING_CONFIG,
)
from core import errors as core_errors
from tests.app.conftest import digits_like_npz, files_under, onnx_model_bytes, pickle_bytes
from tests.app.web.test_jobs import finish, submit
from tests.app.web.test_submit import CONFIG, post

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
# What FastAPI writes when a response says nothing of its own.
GENERIC_DESCRIPTIONS = {status.phrase for status in HTTPStatus} | {
    "Successful Response",
    "Validation Error",
    "Additional Response",
    "Default Response",
    "",
}
# Component properties allowed without a description: none. FastAPI's HTTPValidationError and
# ValidationError would need entries here, but the app answers validation errors as
# problem+json, so the document must not reference them (test_no_fastapi_default_422).
UNDESCRIBED_PROPERTIES: set[tuple[str, str]] = set()
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def service_error_codes() -> dict[str, int]:
    """code -> HTTP status of every error class of the core and the API."""
    statuses: dict[str, int] = {}
    for module in (core_errors, app_errors):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, core_errors.HardenError) and cls.__module__ == module.__name__:
                assert statuses.get(cls.code, cls.status) == cls.status, cls
                statuses[cls.code] = cls.status
    return statuses


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("openapi")
    settings = Settings(
        database_url=f"sqlite:///{folder}/h.db", broker_url="memory://", artifact_dir=folder
    )
    served: dict[str, Any] = TestClient(create_app(settings)).get("/openapi.json").json()
    return served


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


def responses(document: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for name, operation in operations(document):
        for status, response in operation["responses"].items():
            yield name, int(status), response


def example_values(media: dict[str, Any]) -> list[Any]:
    values = [media["example"]] if "example" in media else []
    return values + [example["value"] for example in media.get("examples", {}).values()]


def validate(document: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    """Validate against an OpenAPI 3.1 schema whose $refs point into the document."""
    root = {**schema, "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(value)


def test_the_service_has_error_codes():
    codes = service_error_codes()
    assert codes["unsafe_model"] == 422 and codes["not_found"] == 404
    assert codes["invalid_request"] == 422 and codes["not_ready"] == 503


def test_every_operation_has_a_summary_and_a_description(document):
    missing = [
        name
        for name, operation in operations(document)
        if not operation.get("summary") or not operation.get("description")
    ]
    assert not missing, missing
    assert len(list(operations(document))) == 15


def test_every_response_has_a_specific_description(document):
    generic = [
        f"{name} {status}: {response.get('description')!r}"
        for name, status, response in responses(document)
        if response.get("description", "").strip() in GENERIC_DESCRIPTIONS
    ]
    assert not generic, generic


def test_every_parameter_has_a_description(document):
    missing = [
        f"{name} {parameter['in']} {parameter['name']}"
        for name, operation in operations(document)
        for parameter in operation.get("parameters", [])
        if not parameter.get("description")
    ]
    assert not missing, missing


def test_errors_are_problem_json_with_real_codes_of_their_status(document):
    codes = service_error_codes()
    wrong = []
    for name, status, response in responses(document):
        if status < 400:
            continue
        where = f"{name} {status}"
        content = response.get("content", {})
        if set(content) != {PROBLEM_JSON}:
            wrong.append(f"{where}: media types {sorted(content)}, not only {PROBLEM_JSON}")
            continue
        media = content[PROBLEM_JSON]
        if media.get("schema") != {"$ref": PROBLEM_REF}:
            wrong.append(f"{where}: schema {media.get('schema')}")
        values = example_values(media)
        if not values:
            wrong.append(f"{where}: no example")
        for value in values:
            code = value.get("code")
            if code not in codes:
                wrong.append(f"{where}: example code {code!r} is no error class' code")
            elif codes[code] != status:
                wrong.append(f"{where}: {code} is answered with {codes[code]}, not {status}")
            if value.get("status") != status or value.get("title") != HTTPStatus(status).phrase:
                wrong.append(f"{where}: example {code} says status {value.get('status')}")
            if f"`{code}`" not in response["description"]:
                wrong.append(f"{where}: the description does not name {code}")
            validate(document, media["schema"], value)
    assert not wrong, "\n".join(wrong)


def test_every_success_body_has_an_example_that_fits_its_schema(document):
    missing = []
    for name, status, response in responses(document):
        if status >= 300:
            continue
        for media_type, media in response.get("content", {}).items():
            schema = media.get("schema", {})
            if schema.get("format") == "binary":
                continue
            values = example_values(media)
            if not values:
                missing.append(f"{name} {status} {media_type}")
            if media_type == "text/event-stream":
                continue  # the example is the stream's text, the schema one parsed event
            for value in values:
                validate(document, schema, value)
    assert not missing, missing


def test_download_and_event_media_types(document):
    download = document["paths"]["/jobs/{job_id}/{artifact}"]["get"]["responses"]
    assert set(download["200"]["content"]) == {
        "application/octet-stream",
        "application/json",
        "text/html",
        "application/sarif+json",
        "text/markdown",
    }
    assert "ETag" in download["200"]["headers"] and "304" in download
    events = document["paths"]["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert "event: end" in events["text/event-stream"]["example"]
    event = events["text/event-stream"]["schema"]["properties"]["event"]
    assert event["enum"] == ["job", "progress", "end"]
    deleted = document["paths"]["/jobs/{job_id}"]["delete"]["responses"]
    assert "204" in deleted and "content" not in deleted["204"]


def test_the_events_sent_are_the_documented_events(document, api, auth, store):
    # schemathesis found the stream's events checked against {"type": "string"}.
    job_id = _job(api, auth)
    store.request_cancel(job_id)
    with api.stream("GET", f"/jobs/{job_id}/events", headers=auth) as response:
        text = "".join(response.iter_text())
    operation = document["paths"]["/jobs/{job_id}/events"]["get"]
    event_schema = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]
    blocks = [block for block in text.split("\n\n") if block.strip()]
    for block in blocks:
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        validate(document, event_schema, fields)
        if fields["event"] == "job":
            validate(document, {"$ref": "#/components/schemas/JobOut"}, json.loads(fields["data"]))
    assert [block.split("\n")[0] for block in blocks] == ["event: job", "event: end"]


def test_every_component_property_has_a_description(document):
    missing = [
        f"{schema_name}.{prop}"
        for schema_name, schema in document["components"]["schemas"].items()
        for prop, definition in schema.get("properties", {}).items()
        if not definition.get("description") and (schema_name, prop) not in UNDESCRIBED_PROPERTIES
    ]
    assert not missing, missing
    for schema_name in ("JobOut", "JobList"):
        schema = document["components"]["schemas"][schema_name]
        for value in schema["examples"]:
            validate(document, {"$ref": f"#/components/schemas/{schema_name}"}, value)


def test_open_mode_documents_no_api_key(document, tmp_path):
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "401" in document["paths"]["/jobs"]["get"]["responses"]
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        broker_url="memory://",
        artifact_dir=tmp_path,
        auth="open",
    )
    open_document = TestClient(create_app(settings)).get("/openapi.json").json()
    text = json.dumps(open_document)
    assert "securitySchemes" not in open_document["components"] and '"security"' not in text
    assert not [name for name, status, _ in responses(open_document) if status == 401]


def test_no_fastapi_default_422(document):
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ValidationError" not in document["components"]["schemas"]


def test_operations_with_constrained_parameters_document_their_422(document):
    def constrained(schema: dict[str, Any]) -> bool:
        keys = {"enum", "minimum", "maximum", "maxLength", "minLength", "pattern", "$ref"}
        options = schema.get("anyOf", [schema])
        return any(keys & set(option) or option.get("type") == "integer" for option in options)

    def validated(parameter: dict[str, Any]) -> bool:
        # An enumerated path segment is matched by the route itself (the download route's
        # convertor): a wrong one is a 404, not a 422 (test_jobs checks it).
        routed = parameter["in"] == "path" and "enum" in parameter["schema"]
        return constrained(parameter["schema"]) and not routed

    missing = [
        name
        for name, operation in operations(document)
        if any(validated(p) for p in operation.get("parameters", []))
        and "422" not in operation["responses"]
    ]
    assert not missing, missing


# --- the error examples are what the app answers ----------------------------------------------
Replay = Callable[[TestClient, dict[str, str], JobStore, Settings, Path], tuple[Any, str]]


def _job(api: TestClient, auth: dict[str, str], **config: object) -> str:
    job_id: str = submit(api, auth, **config)["id"]
    return job_id


def _raw_multipart(body: bytes, auth: dict[str, str]) -> dict[str, Any]:
    return {
        "content": body,
        "headers": auth | {"content-type": "multipart/form-data; boundary=xyz"},
    }


def _not_done(api, auth, store, settings, tmp_path):
    job_id = _job(api, auth)
    assert store.mark_running(job_id)
    return api.get(f"/jobs/{job_id}/model.onnx", headers=auth), job_id


def _failed(api, auth, store, settings, tmp_path):
    job_id = _job(api, auth)
    assert store.mark_running(job_id)
    error = JobError(
        "model_dataset_mismatch",
        "the model outputs NaN or infinite values on the dataset's inputs",
        "the model's last layer must have one output per dataset class",
    )
    assert store.mark_failed(job_id, error)
    return api.get(f"/jobs/{job_id}/report.json", headers=auth), job_id


def _ended(api, auth, store, settings, tmp_path):
    job_id = _job(api, auth)
    finish(store, LocalStore(settings.artifact_dir), tmp_path, job_id)
    return api.post(f"/jobs/{job_id}/cancel", headers=auth), job_id


def _lost(api, auth, store, settings, tmp_path):
    job_id = _job(api, auth)
    finish(store, LocalStore(settings.artifact_dir), tmp_path, job_id)
    (settings.artifact_dir / job_id / "report.html").unlink()
    return api.get(f"/jobs/{job_id}/report.html", headers=auth), job_id


def _reused_key(api, auth, store, settings, tmp_path):
    key = {"Idempotency-Key": "k1"}
    job_id = post(api, auth, onnx_model_bytes(), extra_headers=key).json()["id"]
    changed = CONFIG | {"temperature": 20}
    return post(api, auth, onnx_model_bytes(), config=changed, extra_headers=key), job_id


def _quota_full(api, auth, store, settings, tmp_path):
    for _ in range(settings.max_active_jobs_per_key):
        _job(api, auth)  # queued: the in-memory broker has no worker
    return post(api, auth, onnx_model_bytes()), EXAMPLE_JOB_ID


def _dataset_in_use(api, auth, store, settings, tmp_path):
    files = {"dataset": ("d.npz", digits_like_npz())}
    dataset = api.post("/datasets", files=files, headers=auth).json()
    job_id = _job(api, auth, dataset=dataset["reference"])
    response = api.delete(f"/datasets/{dataset['id']}", headers=auth)
    body = response.json()
    # The example's ids, for the comparison with the documented body.
    text = json.dumps(body).replace(dataset["id"], EXAMPLE_DATASET_ID)
    return _Answer(response.status_code, response.headers, json.loads(text)), job_id


class _Answer:
    """A response whose body had its generated ids replaced by the example's."""

    def __init__(self, status_code: int, headers: Any, body: Any) -> None:
        self.status_code, self.headers, self.text, self._body = status_code, headers, "", body

    def json(self) -> Any:
        return self._body


def _plain(request: Callable[[TestClient, dict[str, str]], Any]) -> Replay:
    return lambda api, auth, store, settings, tmp_path: (request(api, auth), EXAMPLE_JOB_ID)


CUT_OFF = b'--xyz\r\nContent-Disposition: form-data; name="config"\r\n\r\n{"dataset": '
REPLAYS: dict[str, Replay] = {
    "not_multipart": _plain(lambda api, auth: api.post("/harden", json={}, headers=auth)),
    "unknown_part": _plain(
        lambda api, auth: api.post(
            "/harden", files={"model": ("m", b"x"), "weights": ("w", b"x")}, headers=auth
        )
    ),
    "cut_off_upload": _plain(
        lambda api, auth: api.post("/harden", **_raw_multipart(CUT_OFF, auth))
    ),
    "no_api_key": _plain(lambda api, auth: api.get("/jobs")),
    "unknown_api_key": _plain(
        lambda api, auth: api.get("/jobs", headers={"Authorization": "Bearer nope"})
    ),
    "unknown_job": _plain(lambda api, auth: api.get(f"/jobs/{EXAMPLE_JOB_ID}", headers=auth)),
    "artifact_lost": _lost,
    "idempotency_conflict": _reused_key,
    "job_already_ended": _ended,
    "job_not_done": _not_done,
    "job_failed": _failed,
    "model_too_large": _plain(lambda api, auth: post(api, auth, b"\0" * 70_000)),
    "config_too_large": _plain(lambda api, auth: post(api, auth, b"x", config="x" * 1048577)),
    "idempotency_key_too_long": _plain(
        lambda api, auth: post(
            api, auth, onnx_model_bytes(), extra_headers={"Idempotency-Key": "k" * 256}
        )
    ),
    "bad_page": _plain(lambda api, auth: api.get("/jobs?limit=0", headers=auth)),
    "bad_layout": _plain(
        lambda api, auth: api.get(
            f"/jobs/{EXAMPLE_JOB_ID}/layout.zip?layout=tensorflow", headers=auth
        )
    ),
    "unknown_artifact": _plain(
        lambda api, auth: api.get(f"/jobs/{EXAMPLE_JOB_ID}/weights.bin", headers=auth)
    ),
    "config_not_json": _plain(lambda api, auth: post(api, auth, onnx_model_bytes(), "{oops")),
    "config_out_of_range": _plain(
        lambda api, auth: post(
            api, auth, onnx_model_bytes(), CONFIG | {"distillation": {"temperature": 0}}
        )
    ),
    "webhook_not_public": _plain(
        lambda api, auth: post(
            api, auth, onnx_model_bytes(), CONFIG | {"webhook_url": "http://127.0.0.1/hook"}
        )
    ),
    "evaluation_too_large": _plain(
        lambda api, auth: post(api, auth, onnx_model_bytes(), COSTLY_CONFIG)
    ),
    "training_too_large": _plain(
        lambda api, auth: post(api, auth, onnx_model_bytes(), LONG_TRAINING_CONFIG)
    ),
    "too_many_active_jobs": _quota_full,
    "dataset_path": _plain(
        lambda api, auth: post(api, auth, onnx_model_bytes(), {"dataset": "/data/cifar.npz"})
    ),
    "npz_missing_arrays": _plain(
        lambda api, auth: post(api, auth, onnx_model_bytes(), dataset=digits_like_npz("x_test"))
    ),
    "no_model_part": _plain(
        lambda api, auth: api.post(
            "/harden", data={"config": "{}"}, files={"dataset": ("d", b"x")}, headers=auth
        )
    ),
    "empty_model": _plain(lambda api, auth: post(api, auth, b"")),
    "unknown_model_format": _plain(lambda api, auth: post(api, auth, b"not a model at all")),
    "pickle_model": _plain(lambda api, auth: post(api, auth, pickle_bytes())),
    "unknown_registered_dataset": _plain(
        lambda api, auth: post(
            api, auth, onnx_model_bytes(), CONFIG | {"dataset": f"dataset:{EXAMPLE_DATASET_ID}"}
        )
    ),
    "dataset_url_not_public": _plain(
        lambda api, auth: post(
            api, auth, onnx_model_bytes(), CONFIG | {"dataset": "https://127.0.0.1/d.npz"}
        )
    ),
    "dataset_not_multipart": _plain(lambda api, auth: api.post("/datasets", json={}, headers=auth)),
    "dataset_too_large": _plain(
        lambda api, auth: api.post(
            "/datasets", files={"dataset": ("d.npz", b"\0" * 70_000)}, headers=auth
        )
    ),
    "no_dataset_part": _plain(
        lambda api, auth: api.post("/datasets", files={"name": (None, "x")}, headers=auth)
    ),
    "bad_input_range": _plain(
        lambda api, auth: api.post(
            "/datasets",
            files={"dataset": ("d.npz", digits_like_npz())},
            data={"input_range": "[1, 0]"},
            headers=auth,
        )
    ),
    "unknown_dataset": _plain(
        lambda api, auth: api.get(f"/datasets/{EXAMPLE_DATASET_ID}", headers=auth)
    ),
    "dataset_in_use": _dataset_in_use,
}
# Replayed in test_broker_down_examples, with a broker that cannot be reached.
BROKER_DOWN = ("queue_unreachable", "not_ready")


def assert_answers_example(response: Any, name: str, job_id: str, limit: int) -> None:
    expected = json.dumps(EXAMPLES[name].body())
    expected = expected.replace(EXAMPLE_JOB_ID, job_id).replace(str(DEFAULT_LIMIT), str(limit))
    assert response.status_code == EXAMPLES[name].status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json() == json.loads(expected)


# Replayed in test_database_down_examples, with a job store that cannot be reached.
DATABASE_DOWN = ("database_unreachable",)


def test_every_error_example_is_replayed():
    assert set(EXAMPLES) == set(REPLAYS) | set(BROKER_DOWN) | set(DATABASE_DOWN)


@pytest.mark.parametrize("name", sorted(REPLAYS))
def test_error_example_is_what_the_app_answers(name, api, auth, store, settings, tmp_path):
    response, job_id = REPLAYS[name](api, auth, store, settings, tmp_path)
    assert_answers_example(response, name, job_id, settings.max_upload_bytes)


def test_broker_down_examples_are_what_the_app_answers(settings):
    settings = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0", "auth": "open"})
    limit = settings.max_upload_bytes
    with TestClient(create_app(settings)) as client:
        response = post(client, {}, onnx_model_bytes())
        assert_answers_example(response, "queue_unreachable", EXAMPLE_JOB_ID, limit)
        assert_answers_example(client.get("/readyz"), "not_ready", EXAMPLE_JOB_ID, limit)


def test_database_down_examples_are_what_the_app_answers(settings):
    # Nothing listens on port 1: every query fails to connect, as with a stopped database.
    down = "postgresql+psycopg://postgres@127.0.0.1:1/harden"
    settings = settings.model_copy(update={"database_url": down, "migrate_on_start": False})
    limit = settings.max_upload_bytes
    with TestClient(create_app(settings)) as client:
        bearer = {"Authorization": "Bearer hk_anything"}
        for response in (
            client.get("/jobs", headers=bearer),
            client.get(f"/jobs/{EXAMPLE_JOB_ID}", headers=bearer),
            post(client, bearer, onnx_model_bytes()),
        ):
            assert_answers_example(response, "database_unreachable", EXAMPLE_JOB_ID, limit)
    # Open mode reads no key: the submission gets as far as the store, and leaves no file.
    with TestClient(create_app(settings.model_copy(update={"auth": "open"}))) as client:
        response = post(client, {}, onnx_model_bytes(), dataset=digits_like_npz())
        assert_answers_example(response, "database_unreachable", EXAMPLE_JOB_ID, limit)
    assert files_under(settings.upload_dir) == [] and files_under(settings.artifact_dir) == []
