"""The OpenAPI document's success examples, and the fixes FastAPI's generator needs.

The job examples are built by :func:`app.schemas.job_out` from job rows, so they have exactly
the shape the routes answer with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute

from app.db import Job, JobState
from app.problem_docs import EXAMPLE_JOB_ID, PROBLEM_REF
from app.schemas import JobList, JobOut, Problem, job_out
from core.spec import HardenSpec, spec_json_schema

_SUBMITTED = datetime(2026, 11, 25, 7, 0, 0, tzinfo=UTC)
_STARTED = datetime(2026, 11, 25, 7, 0, 2, tzinfo=UTC)
_FINISHED = datetime(2026, 11, 25, 7, 6, 41, tzinfo=UTC)
_MODEL_SHA = "9050d94800194ac3ca8eaabe0db08c963844f88cc5513d2acdfcadb6153ffa9b"
_ARTIFACT_SHAS = {
    "model.onnx": "4c1f0e9b5d0a3e7c2b8f6a1d9e0c7b5a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c",
    "report.json": "a3e7c2b8f6a1d9e0c7b5a3f2e1d0c9b84c1f0e9b5d0f6e5d4c3b2a1f0e9d8c7a",
    "report.html": "0c7b5a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c4c1f0e9b5d0a3e7c2b8f6a1d9e",
}


def job_example(state: JobState, job_id: str = EXAMPLE_JOB_ID, **row: Any) -> dict[str, Any]:
    """A job as GET /jobs/{id} would show it in ``state``."""
    times: dict[str, Any] = {"created_at": _SUBMITTED}
    if state != JobState.queued:
        times["started_at"] = _STARTED
    if state in (JobState.succeeded, JobState.failed, JobState.cancelled):
        times["finished_at"] = _FINISHED
    fields: dict[str, Any] = {
        "id": job_id,
        "owner": "alice",
        "state": state,
        "stage": None,
        "progress": 0.0,
        "spec": HardenSpec(dataset="builtin:digits", student_epochs=10).model_dump(mode="json"),
        "model_sha256": _MODEL_SHA,
        "model_format": "onnx",
        "dataset_sha256": None,
        "artifacts": {},
        "cancel_requested": False,
        "attempts": 0 if state == JobState.queued else 1,
    }
    job = Job(**(fields | times | row))
    return job_out(job).model_dump(mode="json")


QUEUED = job_example(JobState.queued)
RUNNING = job_example(JobState.running, stage="student", progress=0.42)
SUCCEEDED = job_example(
    JobState.succeeded, stage="report", progress=1.0, artifacts=dict(_ARTIFACT_SHAS)
)
FAILED = job_example(
    JobState.failed,
    stage="load",
    progress=0.02,
    error_code="model_dataset_mismatch",
    error_message="the model outputs (64, 100) for 64 inputs; expected (64, 10) logits, one per "
    "class of the dataset",
    error_hint="the model's last layer must have one output per dataset class",
)
CANCELLED = job_example(
    JobState.cancelled,
    cancel_requested=True,
    error_code="cancelled",
    error_message="The job was cancelled on request.",
)
STOPPING = job_example(JobState.running, stage="evaluate", progress=0.81, cancel_requested=True)
JOB_PAGE = JobList(
    items=[JobOut.model_validate(RUNNING)],
    total=2,
    limit=1,
    offset=0,
    next="/jobs?limit=1&offset=1",
).model_dump(mode="json")


def examples(**named: tuple[str, Any]) -> dict[str, Any]:
    """OpenAPI ``examples`` from name=(summary, value)."""
    return {name: {"summary": summary, "value": value} for name, (summary, value) in named.items()}


def json_content(**named: tuple[str, Any]) -> dict[str, Any]:
    return {"application/json": {"examples": examples(**named)}}


# Each event of GET /jobs/{id}/events. OpenAPI 3.1 has no place for the schema of one event of
# a stream; tools (schemathesis) read an event stream's `schema` as that, as OpenAPI 3.2's
# itemSchema: the fields of one event, once parsed.
SERVER_SENT_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One event of the stream, parsed (the stream is text; see the example).",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "type": "string",
            "enum": ["job", "end"],
            "description": "job: the job changed; end: it has ended, and so does the stream.",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": 'job: the job as GET /jobs/{job_id} shows it; end: {"state": the '
            "final state, or 'deleted'}.",
        },
    },
}


def event_stream_example() -> str:
    """What GET /jobs/{id}/events sends for a job that runs to the end."""
    lines = [f"event: job\ndata: {json.dumps(job)}\n\n" for job in (RUNNING, SUCCEEDED)]
    lines.insert(1, ": keep-alive\n\n")
    lines.append('event: end\ndata: {"state": "succeeded"}\n\n')
    return "".join(lines)


def report_example() -> dict[str, Any]:
    """An abridged report.json (the whole schema: schemas/report.schema.json)."""
    return {
        "report_version": "1.0",
        "created_at": "2026-11-25T07:06:40Z",
        "device": "cuda:0",
        "models": {
            "uploaded": {"clean_accuracy": 0.972, "mean_abs_logit": 7.9, "test_samples": 360},
            "student": {"clean_accuracy": 0.967, "mean_abs_logit": 412.5, "test_samples": 360},
        },
        "verdict": {
            "label": "masked",
            "headline": "Masked: distillation hides the student's gradients instead of removing "
            "adversarial examples. Attacks that see through the masking still fool it "
            "(strongest attack at L-inf ε=0.1: 3% robust accuracy for the student vs 2% for "
            "the uploaded model).",
        },
        "notes": [],
    }


def artifact_content() -> dict[str, Any]:
    """The media types of GET /jobs/{id}/{artifact}, one per file."""
    binary = {"type": "string", "format": "binary"}
    return {
        "application/octet-stream": {"schema": binary},
        "application/json": {
            "schema": {"type": "object", "description": "report.json"},
            "examples": examples(report=("report.json, abridged", report_example())),
        },
        "text/html": {
            "schema": {"type": "string", "description": "report.html, one self-contained page"},
            "example": "<!doctype html><html><head><title>harden report</title>...",
        },
    }


def spec_schema_example() -> dict[str, Any]:
    """GET /spec/schema, abridged to two of its properties."""
    schema: dict[str, Any] = spec_json_schema()
    kept = {name: schema["properties"][name] for name in ("dataset", "temperature")}
    return {key: schema[key] for key in ("title", "type") if key in schema} | {"properties": kept}


def install_openapi(app: FastAPI, routers: Sequence[APIRouter], *, open_auth: bool) -> None:
    """Generate the document once, then correct what FastAPI cannot know:

    * the Problem schema, which routes reference from ``application/problem+json`` (FastAPI
      only registers models it puts under ``application/json``);
    * FastAPI's own 422 (``HTTPValidationError``), which it adds to every route with parameters
      although this app answers validation errors as problem+json; routes where a 422 can
      happen declare it with :func:`app.problem_docs.error_responses`;
    * the nulls of the examples, which FastAPI's generator drops (it serialises the document
      with ``exclude_none``), leaving examples that lack required nullable fields;
    * in open mode (``open_auth``), no API key: the document of such a service asks for none
      and lists no 401.

    ``routers`` are the routers included without a prefix, whose routes' declared examples
    are put back.
    """
    generate = app.openapi
    corrected: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI's, cached until the routes change
        if not corrected or corrected[0] is not document:
            _drop_default_validation_errors(document)
            _add_problem_schema(document)
            _restore_examples(document, routers)
            if open_auth:
                _drop_authentication(document)
            corrected[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_default_validation_errors(document: dict[str, Any]) -> None:
    default_ref = "#/components/schemas/HTTPValidationError"
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            if response and default_ref in json.dumps(response):
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    if default_ref not in json.dumps(document.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _drop_authentication(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.pop("security", None)
            operation.get("responses", {}).pop("401", None)
    document.get("components", {}).pop("securitySchemes", None)


def _add_problem_schema(document: dict[str, Any]) -> None:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas[PROBLEM_REF.rsplit("/", 1)[-1]] = schema


def _restore_examples(document: dict[str, Any], routers: Sequence[APIRouter]) -> None:
    routes = [route for router in routers for route in router.routes]
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            for status, declared in route.responses.items():
                for media_type, content in declared.get("content", {}).items():
                    target = operation["responses"][str(status)]["content"][media_type]
                    for key in ("example", "examples"):
                        if key in content:
                            target[key] = jsonable_encoder(content[key])
    schemas = document["components"]["schemas"]
    schemas["JobOut"]["examples"] = [RUNNING]
    schemas["JobList"]["examples"] = [JOB_PAGE]
