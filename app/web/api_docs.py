"""The OpenAPI document's success examples, and the declarations too long for a decorator.

The job examples are built by :func:`app.infra.job_resource.job_out` from job rows, so they
have exactly the shape the routes answer with. What FastAPI's generator gets wrong is fixed in
:mod:`app.web.openapi_document`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from app.infra.db import Job, JobState
from app.infra.job_resource import JobOut, job_out
from app.web.problem_docs import AUTH, responses
from app.web.problem_examples import EXAMPLE_JOB_ID
from app.web.schemas import JobList, JobProgress
from core.contract.methods import DEFAULT_METHOD
from core.contract.spec import HardenSpec, spec_json_schema
from core.names import MODEL_CARD, MODEL_ONNX, REPORT_HTML, REPORT_JSON, REPORT_SARIF
from core.report.summary import CleanAccuracy, RobustAt, VerdictSummary

_SUBMITTED = datetime(2026, 11, 25, 7, 0, 0, tzinfo=UTC)
_STARTED = datetime(2026, 11, 25, 7, 0, 2, tzinfo=UTC)
_FINISHED = datetime(2026, 11, 25, 7, 6, 41, tzinfo=UTC)
_MODEL_SHA = "9050d94800194ac3ca8eaabe0db08c963844f88cc5513d2acdfcadb6153ffa9b"
_ARTIFACT_SHAS = {
    MODEL_ONNX: "4c1f0e9b5d0a3e7c2b8f6a1d9e0c7b5a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c",
    REPORT_JSON: "a3e7c2b8f6a1d9e0c7b5a3f2e1d0c9b84c1f0e9b5d0f6e5d4c3b2a1f0e9d8c7a",
    REPORT_HTML: "0c7b5a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c4c1f0e9b5d0a3e7c2b8f6a1d9e",
    REPORT_SARIF: "5d0a3e7c2b8f6a1d9e0c7b5a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c4c1f0e9b",
    MODEL_CARD: "e1d0c9b8a7f6e5d4c3b2a1f0e9d8c4c1f0e9b5d0a3e7c2b8f6a1d9e0c7b5a3f2",
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
        "spec": HardenSpec.model_validate(
            {"dataset": "builtin:digits", "distillation": {"student_epochs": 10}}
        ).model_dump(mode="json"),
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
# The verdict of a default distillation job (its numbers are illustrative).
_VERDICT = VerdictSummary(
    label="masked",
    headline="Masked: Defensive distillation (Papernot et al. 2016) hides the hardened model's "
    "gradients instead of removing adversarial examples. Attacks that see through the masking "
    "still fool it (strongest attack at L-inf ε=0.3: 0.0% robust accuracy for the hardened "
    "model vs 0.0% for the uploaded model).",
    method=DEFAULT_METHOD,
    clean_accuracy=CleanAccuracy(uploaded=0.973, student=0.966),
    robust=[
        RobustAt(
            norm="linf",
            epsilon=0.3,
            uploaded_robust_accuracy=0.0,
            student_robust_accuracy=0.0,
            uploaded_attack="pgd_linf_ce",
            student_attack="pgd_linf_margin",
            uploaded_worst_case=0.0,
            student_worst_case=0.0,
        )
    ],
).model_dump(mode="json")
SUCCEEDED = job_example(
    JobState.succeeded,
    stage="report",
    progress=1.0,
    artifacts=dict(_ARTIFACT_SHAS),
    verdict=_VERDICT,
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
            "enum": ["job", "progress", "end"],
            "description": "job: the whole job, first; progress: it changed; end: it has ended, "
            "and so does the stream.",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "job: the job as GET /jobs/{job_id} shows it; progress: what "
            "changes while it runs (JobProgress: no spec), the verdict once it succeeded; end: "
            "{\"state\": the final state, or 'deleted'}.",
        },
    },
}


def event_stream_example() -> str:
    """What GET /jobs/{id}/events sends for a job that runs to the end."""
    done = JobProgress.of(JobOut.model_validate(SUCCEEDED)).event_data()
    lines = [
        f"event: job\ndata: {json.dumps(RUNNING)}\n\n",
        ": keep-alive\n\n",
        f"event: progress\ndata: {done}\n\n",
    ]
    lines.append('event: end\ndata: {"state": "succeeded"}\n\n')
    return "".join(lines)


def report_example() -> dict[str, Any]:
    """An abridged report.json (the whole schema: schemas/report.schema.json)."""
    return {
        "report_version": "1.2",
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
        "application/sarif+json": {
            "schema": {"type": "object", "description": "report.sarif, SARIF 2.1.0"},
            "example": {
                "version": "2.1.0",
                "runs": [{"tool": {"driver": {"name": "harden"}}, "results": ["..."]}],
            },
        },
        "text/markdown": {
            "schema": {"type": "string", "description": "MODEL_CARD.md, a Hugging Face card"},
            "example": '---\nlibrary_name: "onnx"\n...\n---\n\n# model-distillation\n...',
        },
    }


def spec_schema_example() -> dict[str, Any]:
    """GET /spec/schema, abridged to two of its properties."""
    schema: dict[str, Any] = spec_json_schema()
    kept = {name: schema["properties"][name] for name in ("dataset", "method")}
    return {key: schema[key] for key in ("title", "type") if key in schema} | {"properties": kept}


JOB_404 = (*AUTH, "unknown_job")


# --- per-route declarations too long for the route decorators -----------------------------
LOCATION = {"description": "URL path of the job.", "schema": {"type": "string"}}
SUBMIT_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "model": {
                            "type": "string",
                            "format": "binary",
                            "description": "The trained classifier: TorchScript, torch.export "
                            "(.pt2), ONNX or safetensors (+ config architecture). "
                            "Pickles are refused.",
                        },
                        "dataset": {
                            "type": "string",
                            "format": "binary",
                            "description": "Optional: an .npz (x_train, y_train, x_test, y_test) "
                            "or a zip/tar of image folders. Sets config.dataset to 'upload'.",
                        },
                        "config": {
                            "type": "string",
                            "description": "JSON of the job spec (GET /spec/schema).",
                            "example": '{"dataset": "builtin:digits", "temperature": 100, '
                            '"student_epochs": 10}',
                        },
                    },
                }
            }
        },
    }
}

SUBMIT_RESPONSES = responses(
    {
        202: {
            "description": "Accepted: the job is queued; `Location` is its URL.",
            "headers": {"Location": LOCATION},
            "content": json_content(queued=("A new job, waiting for a worker", QUEUED)),
        },
        200: {
            "model": JobOut,
            "description": "A retry with the same Idempotency-Key and the same request: the "
            "job the first one created, in its current state.",
            "headers": {"Location": LOCATION},
            "content": json_content(running=("The first request's job", RUNNING)),
        },
    },
    *AUTH,
    "not_multipart",
    "unknown_part",
    "cut_off_upload",
    "idempotency_conflict",
    "model_too_large",
    "config_too_large",
    "idempotency_key_too_long",
    "config_not_json",
    "config_out_of_range",
    "webhook_not_public",
    "evaluation_too_large",
    "training_too_large",
    "dataset_path",
    "unknown_registered_dataset",
    "dataset_url_not_public",
    "npz_missing_arrays",
    "no_model_part",
    "empty_model",
    "unknown_model_format",
    "pickle_model",
    "too_many_active_jobs",
    "queue_unreachable",
)

DOWNLOAD_RESPONSES = responses(
    {
        200: {
            "description": "The file: model.onnx as application/octet-stream, report.json as "
            "application/json (schemas/report.schema.json), report.html as text/html, "
            "report.sarif as application/sarif+json, MODEL_CARD.md as text/markdown.",
            "headers": {
                "ETag": {
                    "description": "The file's sha256, quoted.",
                    "schema": {"type": "string"},
                },
                "Cache-Control": {"schema": {"type": "string"}, "description": "Revalidate."},
            },
            "content": artifact_content(),
        },
        304: {"description": "Not modified: If-None-Match holds the file's ETag; no body."},
    },
    *JOB_404,
    "artifact_lost",
    "job_not_done",
    "job_failed",
    "unknown_artifact",
)
LAYOUT_RESPONSES = responses(
    {
        200: {
            "description": "The model repository as a zip: <name>/config.pbtxt, "
            "<name>/<version>/model.onnx and, for kserve, inference-service.yaml.",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
    },
    *JOB_404,
    "artifact_lost",
    "job_not_done",
    "job_failed",
    "bad_layout",
)
